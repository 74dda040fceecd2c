"""GRPO (group relative policy optimisation) for a generative recommender: the parts that do not
depend on a paradigm, as plain functions over tensors (issue 27; Rec-R1, MiniOneRec and STARec
train the policy on recommendation rewards this way).

For each prompt (a training window's history) the policy samples a group of G completions under
the catalogue trie, so every completion is a real item and never one of the user's history items
(`sample_items`). Each completion gets a reward (`REWARDS`, combinable with weights); rewards are
normalised within the group (`group_advantages`), and the policy is updated with the clipped
policy-ratio objective plus a KL penalty to the frozen reference policy (`grpo_loss`).

The policy here is the constrained one the sampler draws from: at each step the LM's next-token
distribution renormalised over the tokens the trie allows (`constrained_log_probs`), so a
completion's log-probability is the sum of its tokens' log-probabilities under that
distribution. `step_log_probs(prefixes)` is the paradigm's side: the LM's log-probabilities of the
next token after each (prompt, prefix) row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from llm4rec.llm.trie import ItemTrie

StepLogProbs = Callable[[list[list[int]]], Tensor]  # token prefixes -> [rows, vocab] log-probs


@dataclass(frozen=True)
class Completion:
    """One sampled item: its token ids, the trie nodes they lead to, and the constrained policy's
    log-probability of each token (at temperature 1: the objective's, not the sampler's)."""

    item: str
    tokens: tuple[int, ...]
    token_log_probs: tuple[float, ...]

    @property
    def log_prob(self) -> float:
        return float(sum(self.token_log_probs))


def allowed_tokens(trie: ItemTrie, node: int, excluded: dict[int, int]) -> list[tuple[int, int]]:
    """(token, child) pairs a completion may take from `node`: children with an item below them
    that is not excluded (the user's history)."""
    return [
        (token, child)
        for token, child in trie.children[node].items()
        if not trie.only_excluded(child, excluded)
    ]


def constrained_log_probs(
    log_probs: Tensor, tokens: Sequence[int], temperature: float = 1.0
) -> Tensor:
    """The policy's log-probabilities over `tokens` only, tempered and renormalised."""
    logits = log_probs[list(tokens)] / temperature
    return logits - torch.logsumexp(logits, dim=0)


def sample_items(
    step_log_probs: StepLogProbs,
    trie: ItemTrie,
    history: Sequence[str],
    group_size: int,
    temperature: float,
    generator: torch.Generator,
) -> list[Completion]:
    """`group_size` completions sampled token by token from the constrained policy at
    `temperature` (with replacement: a group may repeat an item)."""
    excluded = trie.excluded_counts(history)
    rows = [([], 0, []) for _ in range(group_size)]  # (tokens, node, token log-probs)
    while any(not trie.is_item(node) for _, node, _ in rows):
        live = [i for i, (_, node, _) in enumerate(rows) if not trie.is_item(node)]
        step = step_log_probs([rows[i][0] for i in live])
        for row, i in enumerate(live):
            tokens, node, logps = rows[i]
            options = allowed_tokens(trie, node, excluded)
            ids = [token for token, _ in options]
            sampling = constrained_log_probs(step[row], ids, temperature).exp()
            pick = int(torch.multinomial(sampling, 1, generator=generator))
            logp = float(constrained_log_probs(step[row], ids)[pick])
            rows[i] = (tokens + [ids[pick]], options[pick][1], logps + [logp])
    return [Completion(trie.item_at[node], tuple(t), tuple(lp)) for t, node, lp in rows]


def item_probabilities(
    step_log_probs: StepLogProbs, trie: ItemTrie, history: Sequence[str], temperature: float = 1.0
) -> dict[str, float]:
    """The exact probability of every item under the constrained policy at `temperature`, by
    walking the whole trie (small tries: tests and toys)."""
    excluded = trie.excluded_counts(history)
    out: dict[str, float] = {}
    frontier = [([], 0, 1.0)]
    while frontier:
        prefix, node, p = frontier.pop()
        if trie.is_item(node):
            out[trie.item_at[node]] = p
            continue
        options = allowed_tokens(trie, node, excluded)
        probs = constrained_log_probs(
            step_log_probs([prefix])[0], [t for t, _ in options], temperature
        ).exp()
        for (token, child), q in zip(options, probs.tolist(), strict=True):
            frontier.append((prefix + [token], child, p * q))
    return out


def completion_log_probs(
    token_log_probs: Tensor,
    completions: Sequence[Completion],
    trie: ItemTrie,
    history: Sequence[str],
) -> tuple[Tensor, Tensor]:
    """Teacher-forced per-token log-probabilities of `completions` under the constrained policy
    (differentiable: the loss's current and reference policies), from the LM's full-vocabulary
    log-probabilities `token_log_probs` [completions, positions, vocab] at each completion's
    tokens; returns ([completions, positions] log-probs, mask of real tokens)."""
    excluded = trie.excluded_counts(history)
    length = token_log_probs.shape[1]
    rows, mask = [], torch.zeros(len(completions), length)
    for i, completion in enumerate(completions):
        node, row = 0, []
        for position, token in enumerate(completion.tokens):
            options = allowed_tokens(trie, node, excluded)
            ids = [t for t, _ in options]
            logp = constrained_log_probs(token_log_probs[i, position], ids)
            row.append(logp[ids.index(token)])
            node = dict(options)[token]
        pad = [token_log_probs.new_zeros(())] * (length - len(row))
        rows.append(torch.stack(row + pad))
        mask[i, : len(row)] = 1
    return torch.stack(rows), mask


# -- rewards: one value per completion of a group ---------------------------------------------


def hit_reward(items: Sequence[str], target: str, history: Sequence[str] = ()) -> np.ndarray:
    """1 for the target, 0 otherwise; a history item never earns a reward."""
    seen = set(history)
    return np.array([float(i == target and i not in seen) for i in items])


def rank_penalty_reward(
    items: Sequence[str], log_probs: Sequence[float], target: str, history: Sequence[str] = ()
) -> np.ndarray:
    """MiniOneRec's rank-aware reward as we read it: the target earns 1; a wrong completion is
    penalised by how high the policy ranks it within the group, -(1/log2(rank + 1)) normalised
    by the sum of that weight over the group's ranks (rank 1: the most probable completion)."""
    order = np.argsort(-np.asarray(log_probs, dtype=float), kind="stable")
    rank = np.empty(len(items), dtype=int)
    rank[order] = np.arange(1, len(items) + 1)
    weight = 1.0 / np.log2(rank + 1)
    hits = hit_reward(items, target, history)
    return np.where(hits > 0, 1.0, -weight / weight.sum())


def ndcg_reward(
    lists: Sequence[Sequence[str]], target: str, k: int, history: Sequence[str] = ()
) -> np.ndarray:
    """NDCG@k of each sampled list against the one target (Rec-R1's metric reward)."""
    seen = set(history)
    out = []
    for items in lists:
        ranks = [r for r, item in enumerate(items[:k]) if item == target and item not in seen]
        out.append(1.0 / math.log2(ranks[0] + 2) if ranks else 0.0)
    return np.array(out)


def validity_reward(items: Sequence[str | None], catalogue: set[str], history: Sequence[str] = ()):
    """1 for a completion that is a catalogue item outside the history, 0 otherwise (Rec-R1's
    format reward; constant 1 under the constrained sampler, informative without it)."""
    seen = set(history)
    return np.array([float(i is not None and i in catalogue and i not in seen) for i in items])


def combine_rewards(parts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Σ weight x part, over the parts named in `weights`."""
    unknown = sorted(set(weights) - set(parts))
    if unknown:
        raise ValueError(f"reward '{unknown[0]}' was not computed (have: {', '.join(parts)})")
    return sum(w * parts[name] for name, w in weights.items())


# -- the objective ------------------------------------------------------------------------------


def group_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """[groups, G] rewards -> advantages normalised within each group: (r - mean) / (std + eps),
    exactly 0 for a group whose rewards are all equal (it carries no signal)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    return torch.where(std > 0, (rewards - mean) / (std + eps), torch.zeros_like(rewards))


@dataclass(frozen=True)
class GrpoStats:
    loss: float
    kl: float  # mean per-token KL estimate to the reference
    clip_fraction: float  # share of tokens whose ratio was clipped


def grpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    ref_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip: float = 0.2,
    kl_coef: float = 0.04,
) -> tuple[Tensor, GrpoStats]:
    """The GRPO objective over [completions, tokens] per-token log-probabilities of the current,
    sampling (old) and reference policies, one advantage per completion, `mask` 1 on real
    tokens: -mean over completions of the token-mean of min(ratio A, clip(ratio) A) - kl_coef KL,
    with KL the k3 estimator exp(ref - new) - (ref - new) - 1 (non-negative, 0 where equal)."""
    mask = mask.to(log_probs.dtype)
    ratio = torch.exp(log_probs - old_log_probs)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    delta = ref_log_probs - log_probs
    kl = torch.exp(delta) - delta - 1
    per_token = -(surrogate - kl_coef * kl)
    per_completion = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    loss = per_completion.mean()
    clipped = ((ratio - 1).abs() > clip).to(log_probs.dtype)
    tokens = mask.sum().clamp(min=1)
    stats = GrpoStats(
        loss=float(loss.detach()),
        kl=float((kl.detach() * mask).sum() / tokens),
        clip_fraction=float((clipped * mask).sum() / tokens),
    )
    return loss, stats


def zero_advantage_share(advantages: Tensor) -> float:
    """Share of groups ([groups, G]) whose advantages are all 0: no learning signal (MiniOneRec's
    reproduction found most groups so)."""
    return float((advantages.abs().sum(dim=1) == 0).float().mean())

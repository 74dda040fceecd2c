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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from llm4rec.llm.trie import ItemTrie

StepLogProbs = Callable[[list[list[int]]], Tensor]  # token prefixes -> [rows, vocab] log-probs


@dataclass(frozen=True)
class Completion:
    """One sampled completion: the item it names (None: not a catalogue item outside the history,
    possible only without the trie constraint), its token ids, and the policy's log-probability
    of each token (at temperature 1: the objective's, not the sampler's)."""

    item: str | None
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
    return renormalised(log_probs[list(tokens)], temperature)


def renormalised(log_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probabilities of a subset of tokens, tempered and renormalised over that subset."""
    logits = log_probs / temperature
    return logits - torch.logsumexp(logits, dim=0)


def gathered_rows(step: Tensor, columns: Sequence[Sequence[int]]) -> list[Tensor]:
    """Row r of `step` ([rows, vocab], on any device) at `columns[r]`, as float32 on the host: one
    gather where `step` is, one copy of the few values (a row's allowed tokens), never the
    [rows, vocab] matrix."""
    width = step.shape[1]
    flat = [row * width + column for row, cols in enumerate(columns) for column in cols]
    values = step.reshape(-1)[torch.as_tensor(flat, dtype=torch.long, device=step.device)]
    return list(values.float().cpu().split([len(cols) for cols in columns]))


# (prompt index, token prefix) rows -> [rows, vocab] next-token log-probabilities
GroupStepLogProbs = Callable[[list[tuple[int, list[int]]]], Tensor]


def sample_groups(
    step_log_probs: GroupStepLogProbs,
    trie: ItemTrie,
    histories: Sequence[Sequence[str]],
    group_size: int,
    temperature: float,
    generator: torch.Generator,
    constrained: bool = True,
) -> list[list[Completion]]:
    """`group_size` completions per prompt (one history each), sampled token by token at
    `temperature`, every live row of every prompt in one `step_log_probs` call per position.
    Constrained (the default): from the trie's allowed tokens only, so each completion is a
    catalogue item outside its history. Unconstrained: from the whole vocabulary; a completion
    ends at a leaf or at its first token off the trie (then its item is None), and one ending on
    a history item names no item either (the validity reward tells them apart)."""
    excluded = [trie.excluded_counts(h) for h in histories]
    # per row: (prompt, tokens, node or None once off the trie, token log-probs)
    rows = [(p, [], 0, []) for p in range(len(histories)) for _ in range(group_size)]

    def done(node):
        return node is None or trie.is_item(node)

    while not all(done(node) for _, _, node, _ in rows):
        live = [i for i, (_, _, node, _) in enumerate(rows) if not done(node)]
        step = step_log_probs([(rows[i][0], rows[i][1]) for i in live])
        if constrained:
            options = [allowed_tokens(trie, rows[i][2], excluded[rows[i][0]]) for i in live]
            allowed = gathered_rows(step, [[token for token, _ in o] for o in options])
        else:
            step = step.float().cpu()  # sampled over the whole vocabulary: every row is needed
        for row, i in enumerate(live):
            prompt, tokens, node, logps = rows[i]
            if constrained:
                sampling = renormalised(allowed[row], temperature).exp()
                pick = int(torch.multinomial(sampling, 1, generator=generator))
                token, child = options[row][pick]
                logp = float(renormalised(allowed[row])[pick])
            else:
                sampling = torch.softmax(step[row] / temperature, dim=0)
                token = int(torch.multinomial(sampling, 1, generator=generator))
                child, logp = trie.children[node].get(token), float(step[row][token])
            rows[i] = (prompt, tokens + [token], child, logps + [logp])
    groups: list[list[Completion]] = [[] for _ in histories]
    for prompt, tokens, node, logps in rows:
        item = trie.item_at.get(node) if node is not None else None
        if item is not None and item in set(histories[prompt]):
            item = None
        groups[prompt].append(Completion(item, tuple(tokens), tuple(logps)))
    return groups


def sample_items(
    step_log_probs: StepLogProbs,
    trie: ItemTrie,
    history: Sequence[str],
    group_size: int,
    temperature: float,
    generator: torch.Generator,
    constrained: bool = True,
) -> list[Completion]:
    """One prompt's group (`sample_groups`), its step function given the token prefixes alone."""
    return sample_groups(
        lambda rows: step_log_probs([prefix for _, prefix in rows]),
        trie,
        [history],
        group_size,
        temperature,
        generator,
        constrained,
    )[0]


def beam_groups(
    step_log_probs: GroupStepLogProbs,
    trie: ItemTrie,
    histories: Sequence[Sequence[str]],
    group_size: int,
) -> list[list[Completion]]:
    """Each prompt's `group_size` most probable items under the constrained policy, by beam search
    of that width over the trie (MiniOneRec's groups: distinct, most probable first, no sampling);
    every prompt's live beams in one `step_log_probs` call per position."""
    excluded = [trie.excluded_counts(h) for h in histories]
    # per prompt: (total log-prob, tokens, node, token log-probs), best first
    pools = [[(0.0, [], 0, [])] for _ in histories]
    while True:
        live = [
            (p, b) for p, pool in enumerate(pools) for b, beam in enumerate(pool)
            if not trie.is_item(beam[2])
        ]  # fmt: skip
        if not live:
            break
        step = step_log_probs([(p, pools[p][b][1]) for p, b in live])
        options = [allowed_tokens(trie, pools[p][b][2], excluded[p]) for p, b in live]
        allowed = gathered_rows(step, [[token for token, _ in o] for o in options])
        grown: list[list] = [[beam for beam in pool if trie.is_item(beam[2])] for pool in pools]
        for row, (p, b) in enumerate(live):
            total, tokens, node, logps = pools[p][b]
            scores = renormalised(allowed[row])
            for (token, child), score in zip(options[row], scores.tolist(), strict=True):
                grown[p].append((total + score, tokens + [token], child, logps + [score]))
        # scores only fall as a beam grows: one outside the top group_size never returns
        pools = [sorted(pool, key=lambda beam: -beam[0])[:group_size] for pool in grown]
    return [
        [Completion(trie.item_at[node], tuple(t), tuple(lp)) for _, t, node, lp in pool]
        for pool in pools
    ]


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


def policy_distributions(
    token_log_probs: Tensor,
    completions: Sequence[Completion],
    trie: ItemTrie,
    history: Sequence[str],
    constrained: bool = True,
) -> Iterator[tuple[int, int, Tensor, int]]:
    """(completion, position, log-probabilities over the tokens the policy chose among, index of
    the chosen one) along each completion: the trie's allowed tokens, or the whole vocabulary."""
    excluded = trie.excluded_counts(history)
    for i, completion in enumerate(completions):
        node = 0
        for position, token in enumerate(completion.tokens):
            if constrained:
                options = dict(allowed_tokens(trie, node, excluded))
                ids = list(options)
                logp = constrained_log_probs(token_log_probs[i, position], ids)
                yield i, position, logp, ids.index(token)
                node = options[token]
            else:
                yield i, position, token_log_probs[i, position], token


def completion_log_probs(
    token_log_probs: Tensor,
    completions: Sequence[Completion],
    trie: ItemTrie,
    history: Sequence[str],
    constrained: bool = True,
) -> tuple[Tensor, Tensor]:
    """Teacher-forced per-token log-probabilities of `completions` under the policy the sampler
    drew from (constrained or not; differentiable: the loss's current and reference policies),
    from the LM's full-vocabulary log-probabilities `token_log_probs` [completions, positions,
    vocab] at each completion's tokens; returns ([completions, positions] log-probs, mask of real
    tokens)."""
    length = token_log_probs.shape[1]
    rows = [[token_log_probs.new_zeros(())] * length for _ in completions]
    mask = torch.zeros(len(completions), length)
    for i, position, logp, chosen in policy_distributions(
        token_log_probs, completions, trie, history, constrained
    ):
        rows[i][position] = logp[chosen]
        mask[i, position] = 1
    return torch.stack([torch.stack(row) for row in rows]), mask


def completion_entropy(
    distributions: Iterable[tuple[int, int, Tensor, int]],
) -> tuple[float, int]:
    """(sum, count) of the policy's entropy (nats) at every token position of some completions
    (their `policy_distributions`, of detached log-probabilities): how spread the distribution
    each token was drawn from is (it collapses as RL sharpens)."""
    total, count = 0.0, 0
    for _, _, logp, _ in distributions:
        total -= float((logp.exp() * logp).sum())
        count += 1
    return total, count


# -- rewards: one value per completion of a group ---------------------------------------------


def hit_reward(items: Sequence[str | None], target: str, history: Sequence[str] = ()) -> np.ndarray:
    """1 for the target, 0 otherwise; a history item never earns a reward."""
    seen = set(history)
    return np.array([float(i == target and i not in seen) for i in items])


def rank_penalty_reward(
    items: Sequence[str | None],
    log_probs: Sequence[float],
    target: str,
    history: Sequence[str] = (),
) -> np.ndarray:
    """MiniOneRec's ranking reward (its `ndcg_rule_reward`): in a group that names the target, each
    wrong completion is penalised by how high the policy ranks it, -w(rank) / Σ w over the group's
    ranks with w(r) = 1/log2(r + 1) (rank 1: the most probable completion; MiniOneRec's beams come
    in that order); the target's completions get 0 and a group without the target all 0. Add the
    hit reward for MiniOneRec's "ranking" (rule + ranking)."""
    order = np.argsort(-np.asarray(log_probs, dtype=float), kind="stable")
    rank = np.empty(len(items), dtype=int)
    rank[order] = np.arange(1, len(items) + 1)
    weight = 1.0 / np.log2(rank + 1)
    hits = hit_reward(items, target, history)
    if not hits.any():
        return np.zeros(len(items))
    return np.where(hits > 0, 0.0, -weight / weight.sum())


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


def group_ranks(items: Sequence[str | None], log_probs: Sequence[float]) -> np.ndarray:
    """Each completion's rank in its group's list: the group's distinct items ordered by the
    policy's log-probability (most probable first; None, an invalid completion, ranks last)."""
    best: dict[str | None, float] = {}
    for item, logp in zip(items, log_probs, strict=True):
        best[item] = max(best.get(item, -math.inf), float(logp))
    order = sorted(best, key=lambda i: (i is None, -best[i]))
    rank = {item: r for r, item in enumerate(order, start=1)}
    return np.array([rank[i] for i in items])


def group_ndcg_reward(
    items: Sequence[str | None],
    log_probs: Sequence[float],
    target: str,
    k: int,
    history: Sequence[str] = (),
) -> np.ndarray:
    """The `group_rank_ndcg` reward: NDCG@k of the target in the policy's own group (its distinct
    completions ordered by probability, `group_ranks`), credited to the completions that name the
    target: 1/log2(r + 1) at the target's rank r <= k, else 0. Not Rec-R1's reward, whose list is
    a retriever's, outside the policy: this one ranks the target among the group the policy wrote
    (`ndcg_reward` is the list-level metric)."""
    ranks, hits = group_ranks(items, log_probs), hit_reward(items, target, history)
    return np.where((hits > 0) & (ranks <= k), 1.0 / np.log2(ranks + 1), 0.0)


def rank_bin_reward(
    items: Sequence[str | None],
    log_probs: Sequence[float],
    target: str,
    bins: Sequence[Sequence[float]],
    history: Sequence[str] = (),
) -> np.ndarray:
    """STARec's ranking reward as we read it: the target's rank r in the group's list
    (`group_ranks`) falls in the first bin [max rank, reward] with r <= max rank, and that reward
    goes to the completions naming the target; a target beyond every bin, or a miss, earns 0."""
    ranks, hits = group_ranks(items, log_probs), hit_reward(items, target, history)
    out = np.zeros(len(items))
    for i, (rank, hit) in enumerate(zip(ranks, hits, strict=True)):
        if hit:
            out[i] = next((float(r) for limit, r in bins if rank <= limit), 0.0)
    return out


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


REWARDS = ("hit", "rank_penalty", "group_rank_ndcg", "rank_bins", "validity")


def group_rewards(
    completions: Sequence[Completion],
    target: str,
    history: Sequence[str],
    catalogue: set[str],
    weights: dict[str, float],
    ndcg_k: int = 10,
    bins: Sequence[Sequence[float]] = ((1, 1.0), (5, 0.5), (10, 0.2)),
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One group's rewards: (Σ weight x part, {part: values}) over the parts `weights` names
    (`REWARDS`); a history item never earns any."""
    items = [c.item for c in completions]
    log_probs = [c.log_prob for c in completions]
    compute = {
        "hit": lambda: hit_reward(items, target, history),
        "rank_penalty": lambda: rank_penalty_reward(items, log_probs, target, history),
        "group_rank_ndcg": lambda: group_ndcg_reward(items, log_probs, target, ndcg_k, history),
        "rank_bins": lambda: rank_bin_reward(items, log_probs, target, bins, history),
        "validity": lambda: validity_reward(items, catalogue, history),
    }
    unknown = sorted(set(weights) - set(compute))
    if unknown:
        raise ValueError(f"reward '{unknown[0]}' is not one of: {', '.join(REWARDS)}")
    parts = {name: compute[name]() for name in weights}
    return combine_rewards(parts, weights), parts


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

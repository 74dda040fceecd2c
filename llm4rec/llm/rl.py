"""GRPO's training loop over a fine-tuned generative recommender (issue 27): prompts are training
windows, completions are items sampled under the catalogue trie, rewards are recommendation
rewards (`llm4rec.llm.grpo`), and the policy moves away from its SFT start only as far as the KL
to a frozen copy of that start allows.

One step: take the next `prompts_per_step` windows (a seeded order, a function of the step alone);
draw `group_size` completions per window (`sampler: sample`, from the current policy at
`temperature`; `beam`, the most probable items by constrained beam search, MiniOneRec's groups);
score them; normalise the rewards within each group; then `updates_per_batch` optimiser steps on
the clipped policy-ratio objective with the KL penalty. The first update is at ratio 1, where the
clip cannot act: with `updates_per_batch: 1` (the default) the objective is the group-normalised
policy gradient with the KL penalty (REINFORCE with a group baseline), and the clip acts only from
a second update on. The policy runs in eval mode throughout (no dropout), so the sampler, the ratio
and the KL all see the same function.

Logged per step: reward (and its parts), zero-advantage share, entropy, and the k3 estimator
exp(d) - d - 1 (d = reference minus policy log-probability) averaged over the group's tokens: an
estimate of KL(policy || reference) where the group is drawn from the policy (`kl`, sampler
`sample`), and only the penalty's value at the beam's items where it is not (`k3_at_beam_items`:
beam groups are not samples, so their mean is no estimate of the KL). The clip fraction is logged
where the clip can act (`updates_per_batch` > 1: its last update's). Validation NDCG@10 every
`eval_every` steps selects the checkpoint
(`llm4rec.llm.selection`). A checkpoint holds the weights, the optimiser, the sampler's RNG and the
log so far, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from llm4rec.llm import precision
from llm4rec.llm.grpo import (
    REWARDS,
    beam_groups,
    completion_entropy,
    completion_log_probs,
    group_advantages,
    group_rewards,
    grpo_loss,
    sample_groups,
    zero_advantage_share,
)
from llm4rec.llm.training import checkpoint_extra, load_checkpoint, save_checkpoint
from llm4rec.llm.trie import ItemTrie


@dataclass(frozen=True)
class GrpoConfig:
    steps: int = 100  # optimiser steps (x updates_per_batch)
    prompts_per_step: int = 16  # training windows per step
    group_size: int = 8  # completions sampled per window (G)
    # sample: G completions drawn at `temperature`; beam: the G most probable items by constrained
    # beam search (MiniOneRec), distinct and deterministic
    sampler: str = "sample"
    temperature: float = 1.0  # the sampler's
    constrained: bool = True  # sample under the catalogue trie (False: any token; validity reward)
    # reward = Σ weight x part over: hit | rank_penalty | group_rank_ndcg | rank_bins | validity
    rewards: dict[str, float] = field(default_factory=lambda: {"hit": 1.0})
    ndcg_k: int = 10  # the group_rank_ndcg reward's cutoff
    rank_bins: list[list[float]] = field(
        default_factory=lambda: [[1, 1.0], [5, 0.5], [10, 0.2]]
    )  # the rank_bins reward: [max rank, reward], first match
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    clip: float = 0.2  # the policy ratio's clip range (1 +- clip); acts from the second update on
    kl_coef: float = 0.04  # weight of the k3 KL to the reference (the SFT policy)
    # optimiser steps per batch of groups: 1 is the policy gradient (ratio 1, the clip idle);
    # > 1 reuses the groups, the ratio leaves 1 and the clip bounds it (PPO-style)
    updates_per_batch: int = 1
    max_grad_norm: float | None = 1.0
    max_prompts: int | None = None  # a seeded sample of the training windows (None: all)
    valid_users: int = 200  # checkpoint selection's validation sample (sample_users, seed 0)
    eval_every: int = 20
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rewards) - set(REWARDS))
        if unknown:
            raise ValueError(f"rewards: '{unknown[0]}' is not one of: {', '.join(REWARDS)}")
        if not self.rewards:
            raise ValueError("rewards: name at least one (e.g. {hit: 1.0})")
        if self.group_size < 2:
            raise ValueError(f"group_size is {self.group_size}: a group needs 2 or more")
        if self.temperature <= 0:
            raise ValueError(f"temperature is {self.temperature}, expected > 0")
        if self.sampler not in ("sample", "beam"):
            raise ValueError(f"sampler '{self.sampler}' is not one of: sample, beam")
        if self.sampler == "beam" and not self.constrained:
            raise ValueError("sampler 'beam' searches the catalogue trie: it needs constrained")


def continuation_log_probs(
    model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], pad_id: int
) -> Tensor:
    """Log-probabilities [rows, positions + 1, vocab] (float32): at position j, of the token after
    the row's prompt and the first j tokens of its continuation (teacher forcing; the last
    position is the next token's). An encoder-decoder reads the prompt in its encoder; a causal
    LM reads prompt + continuation, right-padded."""
    rows, length = len(prompts), max(len(c) for c in continuations)
    device = next(model.parameters()).device
    if model.config.is_encoder_decoder:
        ids = torch.full((rows, max(map(len, prompts))), pad_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = torch.as_tensor(prompt)
        start = model.config.decoder_start_token_id
        decoder = torch.tensor(
            [[start, *c] + [start] * (length - len(c)) for c in continuations], dtype=torch.long
        )
        logits = model(
            input_ids=ids.to(device),
            attention_mask=(ids != pad_id).long().to(device),
            decoder_input_ids=decoder.to(device),
            use_cache=False,
        ).logits
    else:
        sequences = [list(p) + list(c) for p, c in zip(prompts, continuations, strict=True)]
        width = max(map(len, sequences))
        ids = torch.full((rows, width), pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)], mask[row, : len(sequence)] = torch.as_tensor(sequence), 1
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        index = torch.tensor(
            [[min(len(p) - 1 + j, width - 1) for j in range(length + 1)] for p in prompts],
            device=device,
        )
        logits = out.logits[torch.arange(rows, device=device)[:, None], index]
    return torch.log_softmax(logits.float(), dim=-1)


Window = tuple[str, list[str], str]  # (user, history, target)


@dataclass
class GrpoResult:
    log: list[dict]  # per optimiser-step batch, from step 1 (a resumed run: restored, then its own)
    steps_run: int  # steps run in this call
    tokens: int  # completion tokens sampled in this call


def train_grpo(
    model,
    reference,
    prompt_of: Callable[[str, list[str]], list[int]],
    windows: Sequence[Window],
    trie: ItemTrie,
    cfg: GrpoConfig,
    seed: int,
    pad_id: int,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    on_step: Callable[[int, float], float | None] | None = None,
    compute_dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> GrpoResult:
    """Run GRPO on `model`'s trainable parameters from its current weights (module doc).
    `on_step(step, reward)` may return the validation score it computed at that step (logged)."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    fingerprint = f"{fingerprint}|{dataclasses.replace(cfg, steps=0, checkpoint_every=0)}"
    start = load_checkpoint(checkpoint_dir, model, optimizer, fingerprint) if checkpoint_dir else 0
    log: list[dict] = []
    if start:
        extra = checkpoint_extra(checkpoint_dir)
        generator.set_state(extra["generator"])
        log = list(extra["log"])
        print(f"[llm4rec] resuming GRPO at step {start}/{cfg.steps} ({checkpoint_dir})", flush=True)
    per_step = cfg.prompts_per_step
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(len(windows)) for _ in range(cfg.steps * per_step // len(windows) + 1)]
    )
    catalogue = set(trie.item_at.values())
    reference.eval()
    tokens = 0
    autocast = precision.autocast(compute_dtype, device)

    def policy_log_probs(net, prompts, completions, histories, group):
        """[rows, positions] log-probs of each completion under `net`, the mask, and the full
        log-probabilities (for the entropy)."""
        full = continuation_log_probs(net, prompts, [list(c.tokens) for c in completions], pad_id)
        parts = [
            completion_log_probs(
                full[g * group : (g + 1) * group],
                completions[g * group : (g + 1) * group],
                trie,
                history,
                cfg.constrained,
            )
            for g, history in enumerate(histories)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), full

    for step in tqdm(
        range(start, cfg.steps), desc="grpo", disable=not progress, initial=start, total=cfg.steps
    ):
        model.eval()  # no dropout: sampler, ratio and KL see one function
        batch = [windows[i] for i in order[step * per_step : (step + 1) * per_step]]
        prompts = [prompt_of(user, history) for user, history, _ in batch]
        histories = [history for _, history, _ in batch]

        def next_token(rows: list[tuple[int, list[int]]], prompts=prompts) -> Tensor:
            full = continuation_log_probs(
                model, [prompts[p] for p, _ in rows], [prefix for _, prefix in rows], pad_id
            )
            at = torch.tensor([len(prefix) for _, prefix in rows], device=full.device)
            return full[torch.arange(len(rows), device=full.device), at].cpu()

        with torch.no_grad(), autocast:
            if cfg.sampler == "beam":
                groups = beam_groups(next_token, trie, histories, cfg.group_size)
            else:
                groups = sample_groups(
                    next_token, trie, histories, cfg.group_size, cfg.temperature, generator,
                    cfg.constrained,
                )  # fmt: skip
        completions = [c for group in groups for c in group]
        tokens += sum(len(c.tokens) for c in completions)
        scored = [
            group_rewards(group, target, history, catalogue, cfg.rewards, cfg.ndcg_k, cfg.rank_bins)
            for group, (_, history, target) in zip(groups, batch, strict=True)
        ]
        rewards = torch.tensor(np.stack([total for total, _ in scored]), dtype=torch.float32)
        advantages = group_advantages(rewards)
        flat_adv = advantages.flatten().to(device)
        row_prompts = [prompts[g] for g in range(len(batch)) for _ in range(cfg.group_size)]
        with torch.no_grad(), autocast:
            ref, _, _ = policy_log_probs(
                reference, row_prompts, completions, histories, cfg.group_size
            )
        for update in range(cfg.updates_per_batch):
            with autocast:
                new, mask, full = policy_log_probs(
                    model, row_prompts, completions, histories, cfg.group_size
                )
            if update == 0:
                old = new.detach()
                entropy = [
                    completion_entropy(
                        full[g * cfg.group_size : (g + 1) * cfg.group_size],
                        groups[g],
                        trie,
                        history,
                        cfg.constrained,
                    )
                    for g, history in enumerate(histories)
                ]
            loss, stats = grpo_loss(new, old, ref, flat_adv, mask.to(device), cfg.clip, cfg.kl_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            if update == 0:
                first = stats
        entry = {
            "step": step + 1,
            "reward": float(rewards.mean()),
            **{
                f"reward_{name}": float(np.mean([parts[name] for _, parts in scored]))
                for name in cfg.rewards
            },
            # the k3 estimator is an estimate of the KL only over samples of the policy
            ("kl" if cfg.sampler == "sample" else "k3_at_beam_items"): first.kl,
            "zero_advantage_share": zero_advantage_share(advantages),
            "entropy": sum(s for s, _ in entropy) / max(1, sum(n for _, n in entropy)),
            **({"clip_fraction": stats.clip_fraction} if cfg.updates_per_batch > 1 else {}),
            "loss": first.loss,
            "distinct_items": len({c.item for c in completions}) / len(completions),
        }
        score = on_step(step + 1, entry["reward"]) if on_step else None
        if score is not None:
            entry["valid"] = score
        log.append(entry)
        if checkpoint_dir and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(
                checkpoint_dir,
                model,
                optimizer,
                step + 1,
                fingerprint,
                {"generator": generator.get_state(), "log": log},
            )
    model.eval()
    return GrpoResult(log, cfg.steps - start, tokens)

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
import functools
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
    GrpoStats,
    beam_groups,
    completion_entropy,
    completion_log_probs,
    group_advantages,
    group_rewards,
    grpo_loss,
    policy_distributions,
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
    # the rank_bins reward: [max rank, reward], first match
    rank_bins: list[list[float]] = field(default_factory=lambda: [[1, 1.0], [5, 0.5], [10, 0.2]])
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    clip: float = 0.2  # the policy ratio's clip range (1 +- clip); acts from the second update on
    kl_coef: float = 0.04  # weight of the k3 KL to the reference (the SFT policy)
    # optimiser steps per batch of groups: 1 is the policy gradient (ratio 1, the clip idle);
    # > 1 reuses the groups, the ratio leaves 1 and the clip bounds it (PPO-style)
    updates_per_batch: int = 1
    max_grad_norm: float | None = 1.0
    # prompts per forward / backward pass (their groups' rows together): the step's gradient is
    # accumulated over such chunks, so activation memory is bounded by the chunk, not the step
    # (None: the whole step in one pass)
    micro_prompts: int | None = None
    # recompute each block's activations in backward instead of keeping them (Hugging Face models)
    gradient_checkpointing: bool = False
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
        if self.micro_prompts is not None and not 1 <= self.micro_prompts:
            raise ValueError(f"micro_prompts is {self.micro_prompts}, expected >= 1 or None")
        if self.sampler == "beam" and not self.constrained:
            raise ValueError("sampler 'beam' searches the catalogue trie: it needs constrained")


def continuation_log_probs(
    model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], pad_id: int
) -> Tensor:
    """Log-probabilities [rows, positions + 1, vocab] (float32): at position j, of the token after
    the row's prompt and the first j tokens of its continuation (teacher forcing; the last
    position is the next token's). An encoder-decoder reads the prompt in its encoder; a causal
    LM reads prompt + continuation, left-padded, so that every row's continuation ends in the last
    column and the LM head runs at the last positions + 1 columns only (`logits_to_keep`), not at
    every prompt position. The head computes in fp32 (`precision.fp32_output`)."""
    rows, length = len(prompts), max(len(c) for c in continuations)
    device = next(model.parameters()).device
    with precision.fp32_output(model):
        if model.config.is_encoder_decoder:
            ids = torch.full((rows, max(map(len, prompts))), pad_id, dtype=torch.long)
            for row, prompt in enumerate(prompts):
                ids[row, : len(prompt)] = torch.as_tensor(prompt)
            start = model.config.decoder_start_token_id
            decoder = torch.tensor(
                [[start, *c] + [start] * (length - len(c)) for c in continuations],
                dtype=torch.long,
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
                ids[row, width - len(sequence) :] = torch.as_tensor(sequence)
                mask[row, width - len(sequence) :] = 1
            mask = mask.to(device)
            kept = model(
                input_ids=ids.to(device),
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=False,
                logits_to_keep=length + 1,
            ).logits  # [rows, length + 1, vocab]: column j of a row with a continuation of n
            # tokens predicts its token j - (length - n); positions past its end repeat its last
            index = torch.tensor(
                [
                    [min(length - len(c) + j, length) for j in range(length + 1)]
                    for c in continuations
                ],
                device=device,
            )
            logits = kept[torch.arange(rows, device=device)[:, None], index]
    return torch.log_softmax(logits.float(), dim=-1)


class PromptStates:
    """A GRPO step's prompts, read once for the whole sampling: a causal LM's KV cache of every
    prompt (left-padded), an encoder-decoder's encoder output. `next_log_probs` then feeds each row
    only its continuation so far, where `continuation_log_probs` would read prompt and continuation
    again at every position (a prompt of about 100 tokens, an identifier of 4-20). The LM head
    computes in fp32 (`precision.fp32_output`), as there."""

    def __init__(
        self, model, prompts: Sequence[Sequence[int]], pad_id: int, chunk: int | None = None
    ):
        """`chunk`: prompts per forward pass (all of them by default)."""
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        self.encoder_decoder = bool(model.config.is_encoder_decoder)
        for row, prompt in enumerate(prompts):
            # an encoder reads right-padded prompts (as continuation_log_probs), a causal LM
            # left-padded ones, so that every prompt ends in the last column
            place = (
                slice(0, len(prompt)) if self.encoder_decoder else slice(width - len(prompt), width)
            )
            ids[row, place], mask[row, place] = torch.as_tensor(prompt, dtype=torch.long), 1
        ids, self.mask = ids.to(self.device), mask.to(self.device)
        parts = [
            slice(b, b + (chunk or len(prompts)))
            for b in range(0, len(prompts), chunk or len(prompts))
        ]
        if self.encoder_decoder:
            encoder = model.get_encoder()
            self.encoded = torch.cat(
                [
                    encoder(input_ids=ids[p], attention_mask=self.mask[p]).last_hidden_state
                    for p in parts
                ]
            )
            return
        outs = []
        with precision.fp32_output(model):
            for part in parts:
                outs.append(
                    model(
                        input_ids=ids[part],
                        attention_mask=self.mask[part],
                        position_ids=(self.mask[part].cumsum(-1) - 1).clamp(min=0),
                        use_cache=True,
                        logits_to_keep=1,
                    )
                )
        self.layers = [
            tuple(
                torch.cat([getattr(o.past_key_values.layers[i], kind) for o in outs])
                for kind in ("keys", "values")
            )
            for i in range(len(outs[0].past_key_values.layers))
        ]
        self.first = torch.log_softmax(torch.cat([o.logits[:, -1] for o in outs]).float(), dim=-1)
        self.lengths = self.mask.sum(dim=1)

    def next_log_probs(self, prompts: Sequence[int], prefixes: Sequence[Sequence[int]]) -> Tensor:
        """[rows, vocab] float32 log-probabilities, on the model's device, of the token after row
        r's prompt (`prompts[r]`, an index into the step's) and its `prefixes[r]`."""
        rows = torch.as_tensor(list(prompts), dtype=torch.long, device=self.device)
        lengths = torch.tensor([len(p) for p in prefixes], device=self.device)
        if not self.encoder_decoder and not int(lengths.max()):
            return self.first[rows]
        width = int(lengths.max()) + self.encoder_decoder
        start = self.model.config.decoder_start_token_id if self.encoder_decoder else self.pad_id
        fill = start if self.encoder_decoder else self.pad_id
        ids = torch.full((len(prefixes), width), fill, dtype=torch.long)
        for row, prefix in enumerate(prefixes):
            tokens = [start, *prefix] if self.encoder_decoder else list(prefix)
            if tokens:
                ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
        ids = ids.to(self.device)
        with precision.fp32_output(self.model):
            if self.encoder_decoder:
                from transformers.modeling_outputs import BaseModelOutput

                logits = self.model(
                    encoder_outputs=BaseModelOutput(self.encoded[rows]),
                    attention_mask=self.mask[rows],
                    decoder_input_ids=ids,
                    use_cache=False,
                ).logits
                last = logits[torch.arange(len(rows), device=self.device), lengths]
                return torch.log_softmax(last.float(), dim=-1)
            from transformers import DynamicCache

            cache = DynamicCache()
            for index, (keys, values) in enumerate(self.layers):
                cache.update(keys[rows], values[rows], index)
            own = (torch.arange(width, device=self.device) < lengths[:, None]).long()
            logits = self.model(
                input_ids=ids,
                attention_mask=torch.cat([self.mask[rows], own], dim=1),
                position_ids=self.lengths[rows][:, None] + torch.arange(width, device=self.device),
                past_key_values=cache,
                use_cache=True,
            ).logits
        last = logits[torch.arange(len(rows), device=self.device), (lengths - 1).clamp(min=0)]
        out = torch.log_softmax(last.float(), dim=-1)
        # a row with no prefix yet reads the prompt's own last position
        return torch.where((lengths == 0)[:, None], self.first[rows], out)


Window = tuple[str, list[str], str]  # (user, history, target)


def _enable_checkpointing(model) -> list[torch.nn.Module]:
    """Hugging Face gradient checkpointing on `model`'s blocks; the blocks it acts on (it acts only
    on a block whose own `training` flag is set: the loop sets that flag alone, so the model stays
    in eval mode and no dropout runs)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ValueError(
            "gradient_checkpointing: the policy is not a Hugging Face model with "
            "activation_checkpointing_enable / gradient_checkpointing_enable"
        )
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


def _combined(parts: list[tuple[GrpoStats, float, float]]) -> GrpoStats:
    """One step's statistics from its chunks' (stats, share of the completions, real tokens): the
    loss weighted by completions, the KL and the clip fraction by tokens."""
    tokens = max(1.0, sum(n for _, _, n in parts))
    return GrpoStats(
        loss=sum(s.loss * share for s, share, _ in parts),
        kl=sum(s.kl * n for s, _, n in parts) / tokens,
        clip_fraction=sum(s.clip_fraction * n for s, _, n in parts) / tokens,
    )


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
    checkpointed = _enable_checkpointing(model) if cfg.gradient_checkpointing else []

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

    def chunk_log_probs(net, chunk: range, row_prompts, completions, histories):
        """`policy_log_probs` of the prompts `chunk` (indices into the step's) and their groups."""
        rows = slice(chunk.start * cfg.group_size, chunk.stop * cfg.group_size)
        return policy_log_probs(
            net,
            row_prompts[rows],
            completions[rows],
            histories[chunk.start : chunk.stop],
            cfg.group_size,
        )

    for step in tqdm(
        range(start, cfg.steps), desc="grpo", disable=not progress, initial=start, total=cfg.steps
    ):
        model.eval()  # no dropout: sampler, ratio and KL see one function
        entropy: list[tuple[float, int]] = []
        batch = [windows[i] for i in order[step * per_step : (step + 1) * per_step]]
        prompts = [prompt_of(user, history) for user, history, _ in batch]
        histories = [history for _, history, _ in batch]

        def next_token(rows: list[tuple[int, list[int]]], states=None) -> Tensor:
            """Next-token log-probs of each live row (on the device), micro_prompts x group_size
            rows a pass, each reading its prompt from the step's `PromptStates`."""
            size = cfg.micro_prompts * cfg.group_size if cfg.micro_prompts else len(rows)
            out = [
                states.next_log_probs(
                    [p for p, _ in rows[begin : begin + size]],
                    [prefix for _, prefix in rows[begin : begin + size]],
                )
                for begin in range(0, len(rows), size)
            ]
            return out[0] if len(out) == 1 else torch.cat(out)

        with torch.no_grad(), autocast:
            states = PromptStates(model, prompts, pad_id, cfg.micro_prompts)
            next_token = functools.partial(next_token, states=states)
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
        # the step's prompts in chunks of micro_prompts, each chunk's rows in one pass
        group, micro = cfg.group_size, cfg.micro_prompts or len(batch)
        chunks = [range(b, min(b + micro, len(batch))) for b in range(0, len(batch), micro)]

        with torch.no_grad(), autocast:
            refs = [
                chunk_log_probs(reference, chunk, row_prompts, completions, histories)[0]
                for chunk in chunks
            ]
        for layer in checkpointed:
            layer.training = True  # its own flag only: its dropouts stay off (module doc)
        olds: list[Tensor] = []
        for update in range(cfg.updates_per_batch):
            optimizer.zero_grad(set_to_none=True)
            parts = []
            for i, chunk in enumerate(chunks):
                with autocast:
                    new, mask, full = chunk_log_probs(
                        model, chunk, row_prompts, completions, histories
                    )
                if update == 0:
                    olds.append(new.detach())
                    entropy += [
                        completion_entropy(
                            policy_distributions(
                                full[g * group : (g + 1) * group].detach(),
                                groups[p],
                                trie,
                                histories[p],
                                cfg.constrained,
                            )
                        )
                        for g, p in enumerate(chunk)
                    ]
                rows = slice(chunk.start * group, chunk.stop * group)
                loss, stats = grpo_loss(
                    new, olds[i], refs[i], flat_adv[rows], mask.to(device), cfg.clip, cfg.kl_coef
                )
                # the step's loss is the mean over its completions: each chunk weighs its share
                share = len(chunk) / len(batch)
                (loss if len(chunks) == 1 else loss * share).backward()
                parts.append((stats, share, float(mask.sum())))
                del new, mask, full, loss
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            stats = parts[0][0] if len(parts) == 1 else _combined(parts)
            if update == 0:
                first = stats
        model.eval()
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

"""Supervised fine-tuning on next-item examples: history as a prompt, the next item as the answer.

Examples come from the training split only (sliding windows over each user's training
sequence, history truncated to the last `max_history` items); the loss covers the target
tokens only (prompt tokens are labelled -100). Training is seeded (batch order from a seeded
permutation), runs a fixed step budget with gradient accumulation, autocast to the backbone's dtype
(bf16 / fp16 backbones; `llm4rec.llm.precision`), a
progress bar, and atomic checkpoints (trainable weights + optimizer + step) it resumes from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from llm4rec.llm import distributed, precision
from llm4rec.llm.prompts import Prompt


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 100  # optimizer steps
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    checkpoint_every: int = 50
    seed: int = 0  # batch order (LLMRecommender sets it to the run's seed)
    schedule: str = (
        "constant"  # learning rate over steps: constant | cosine (to 0 at `steps`), after warmup
    )
    warmup_steps: int = 0  # linear warmup from 0

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"sft.schedule '{self.schedule}' is not one of: constant, cosine")

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based): a function of the step alone, so a
        resumed run continues the schedule exactly."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
            return self.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.learning_rate


def sliding_window_examples(
    sequences: dict[str, Sequence[str]], max_history: int
) -> list[tuple[str, list[str], str]]:
    """(user, history, target) for every position >= 1 of every user's training sequence."""
    out = []
    for user in sorted(sequences):
        items = list(sequences[user])
        for t in range(1, len(items)):
            out.append((user, items[max(0, t - max_history) : t], items[t]))
    return out


def training_windows(
    split, max_history: int, max_examples: int | None, rng: np.random.Generator
) -> list[tuple[str, list[str], str]]:
    """The next-item windows of a split's training phase (`sliding_window_examples`), or a seeded
    sample of `max_examples` of them in their original order (None: all)."""
    train = split.phase("train")
    windows = sliding_window_examples(
        {u: g.tolist() for u, g in train.groupby("user_id")["item_id"]}, max_history
    )
    if max_examples and len(windows) > max_examples:
        windows = [
            windows[i] for i in sorted(rng.choice(len(windows), max_examples, replace=False))
        ]
    return windows


def token_array(ids: Sequence[int]) -> np.ndarray:
    """Token ids (or labels, -100 included) as one int32 array: 4 bytes an id where a list of
    Python ints takes about 36. ml-1m's million training windows of about 190 tokens, two token
    lists each, fit in about 3 GB this way instead of about 16."""
    return np.asarray(ids, dtype=np.int32)


def encode_example(
    prompt_ids: Sequence[int], target_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) with the loss on the target tokens only, as `token_array`s."""
    ids = token_array([*prompt_ids, *target_ids])
    labels = np.full(len(ids), -100, dtype=np.int32)
    labels[len(prompt_ids) :] = target_ids
    return ids, labels


def next_item_examples(
    split,
    prompt: Callable[[Sequence[str], str], Prompt],
    answers: Mapping[str, list[int]],
    max_history: int,
    max_examples: int | None,
    rng: np.random.Generator,
) -> list[tuple[list[int], list[int]]]:
    """SFT examples of a paradigm that answers with an item's tokens: every next-item window
    (`training_windows`) as the `prompt(history, target)` of its history (the target: for a
    request written from it), then the target's `answers` tokens, the loss on those
    (`encode_example`)."""
    windows = training_windows(split, max_history, max_examples, rng)
    return [
        encode_example(prompt(history, target).ids, answers[target])
        for _, history, target in windows
    ]


def collate(
    encoded: list[tuple[list[int], list[int]]], pad_id: int, device: str
) -> dict[str, torch.Tensor]:
    length = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), length), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (ids, lab) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.as_tensor(ids)
        labels[row, : len(lab)] = torch.as_tensor(lab)
        mask[row, : len(ids)] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad
    }


def save_checkpoint(
    directory: Path, model, optimizer, step: int, fingerprint: str = "", extra: dict | None = None
) -> None:
    """Write <directory>/last atomically: a killed run leaves the previous checkpoint intact.
    `extra`: what else a loop needs to resume exactly (e.g. RL's sampler state and step log)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".last."))
    try:
        # no generator state: dropout is seeded per micro-batch (`micro_batch_seed`)
        torch.save(
            {
                "trainable": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "fingerprint": fingerprint,
                "extra": extra or {},
            },
            tmp / "state.pt",
        )
        old = directory / ".last.old"
        if (directory / "last").exists():
            os.replace(directory / "last", old)
        os.replace(tmp, directory / "last")
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(directory: Path, model, optimizer, fingerprint: str = "") -> int:
    """Restore the last complete checkpoint; return its step (0 when there is none, or when it
    was written under another configuration: then it is removed and training restarts)."""
    path = directory / "last" / "state.pt"
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint", "") != fingerprint:
        print(
            f"[llm4rec] {path}: written under another configuration; restarting training from "
            "step 0",
            flush=True,
        )
        distributed.barrier()  # several processes: every one has read it before it goes
        if distributed.is_main():
            shutil.rmtree(directory / "last", ignore_errors=True)
        distributed.barrier()
        return 0
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(state["trainable"]) != expected:
        raise ValueError(
            f"{path}: checkpoint does not match the model's trainable parameters; delete it to "
            "restart"
        )
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in state["trainable"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def micro_batch_seed(seed: int, step: int, micro: int) -> int:
    """The generator seed of micro-batch `micro` of optimiser step `step`: a function of the three
    alone, so dropout draws the same masks on whichever process runs the micro-batch, and after a
    resume."""
    return int(np.random.SeedSequence([seed, step, micro]).generate_state(1, np.uint64)[0]) >> 1


def checkpoint_extra(directory: Path) -> dict:
    """The `extra` a checkpoint was saved with ({} without a checkpoint)."""
    path = directory / "last" / "state.pt"
    if not path.is_file():
        return {}
    return torch.load(path, map_location="cpu", weights_only=True).get("extra", {})


@dataclass
class SFTResult:
    # per optimizer step run in this call (a resumed run: the steps after the checkpoint)
    losses: list[float]
    tokens: int  # non-padding tokens through the model in those steps


def checkpoint_fingerprint(cfg: SFTConfig, fingerprint: str = "") -> str:
    """What a checkpoint must have been trained under to be resumed: the caller's fingerprint and
    the SFT config except its step budget under a constant learning rate (a longer run continues a
    shorter one; a cosine schedule depends on the budget)."""
    steps = cfg.steps if cfg.schedule != "constant" else 0
    return f"{fingerprint}|{dataclasses.replace(cfg, steps=steps, checkpoint_every=0)}"


# (model, examples of one micro-batch, optimizer step) -> (loss, tokens); the step lets an objective
# change over training (e.g. LLaRA's curriculum) as a function of the step alone: resume stays exact
LossFn = Callable[[object, list, int], tuple[torch.Tensor, int]]


def causal_lm_loss(pad_id: int, device: str) -> LossFn:
    """The default loss: the backbone's own cross-entropy on the labelled (target) tokens of
    right-padded (input_ids, labels) examples; tokens = non-padding tokens fed."""

    def loss(model, examples: list, step: int) -> tuple[torch.Tensor, int]:
        batch = collate(examples, pad_id, device)
        labels = batch.pop("labels")
        return labelled_token_loss(model, labels, **batch), int(batch["attention_mask"].sum())

    return loss


def labelled_token_loss(model, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """A causal LM's cross-entropy on its labelled tokens (labels -100 elsewhere), as its own
    `loss` computes it (next-token shift, mean over labelled tokens, logits upcast to fp32), with
    the LM head applied at the labelled positions only: about 10 of the 190 positions of a
    next-item window, where the full head would compute and upcast [batch, 190, vocab] logits."""
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    targets = labels[:, 1:]
    keep = targets != -100
    # the last hidden state is the final norm's output, the LM head's input
    logits = model.get_output_embeddings()(out.hidden_states[-1][:, :-1][keep])
    return nn.functional.cross_entropy(logits.float(), targets[keep])


def train_sft(
    model,
    examples: Sequence,
    cfg: SFTConfig,
    pad_id: int,
    checkpoint_dir: Path | None = None,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
    fingerprint: str = "",
    loss_fn: LossFn | None = None,
    compute_dtype: torch.dtype | None = None,
) -> SFTResult:
    """Train the model's trainable parameters for cfg.steps optimizer steps. `fingerprint`
    identifies everything else that shapes training (model, data, prompt): a checkpoint is only
    resumed under the same fingerprint and SFT config. `loss_fn` computes a micro-batch's loss
    and step (default `causal_lm_loss`: examples are (input_ids, labels) pairs); a
    paradigm passes its own for other objectives (e.g. a softmax restricted to item tokens).
    `compute_dtype`: the backbone's (autocast to it if bf16 / fp16); default: read off the model."""
    loss_fn = loss_fn or causal_lm_loss(pad_id, device)
    rank, size = distributed.world()
    if cfg.grad_accum % size:
        raise ValueError(
            f"sft.grad_accum is {cfg.grad_accum} with {size} processes: it must be a multiple of "
            "the number of processes, each of which takes grad_accum / processes micro-batches "
            "of every step"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    fingerprint = checkpoint_fingerprint(cfg, fingerprint)
    # process 0 may have just written the checkpoint the others are about to read
    distributed.barrier()
    start = load_checkpoint(checkpoint_dir, model, optimizer, fingerprint) if checkpoint_dir else 0
    if start:
        print(
            f"[llm4rec] resuming SFT from the checkpoint at step {start}/{cfg.steps} "
            f"({checkpoint_dir / 'last'})",
            flush=True,
        )
    per_step = cfg.batch_size * cfg.grad_accum
    rng = np.random.default_rng(cfg.seed)
    order = np.concatenate(
        [rng.permutation(len(examples)) for _ in range(cfg.steps * per_step // len(examples) + 1)]
    )
    model.train()
    losses, tokens = [], 0
    compute = compute_dtype or precision.backbone_dtype(model)
    for step in tqdm(
        range(start, cfg.steps), desc="sft", disable=not progress, initial=start, total=cfg.steps
    ):
        optimizer.zero_grad(set_to_none=True)
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate_at(step)
        # the step's loss summed on the device in float64 (as Python's floats would, without a
        # host sync per micro-batch); read once per step
        total, fed_step = torch.zeros((), dtype=torch.float64, device=device), 0
        # several processes: each takes its share of micro-batches
        for micro in range(rank, cfg.grad_accum, size):
            begin = step * per_step + micro * cfg.batch_size
            torch.manual_seed(micro_batch_seed(cfg.seed, step, micro))  # every device's generator
            with precision.autocast(compute, device):
                loss, fed = loss_fn(
                    model, [examples[i] for i in order[begin : begin + cfg.batch_size]], step
                )
                loss = loss / cfg.grad_accum
            fed_step += fed
            loss.backward()
            total += loss.detach().double()
        total = float(total)
        if size > 1:
            distributed.all_reduce_gradients(params)
            total, fed_step = distributed.all_sum(total), int(distributed.all_sum(fed_step))
        tokens += fed_step
        optimizer.step()
        losses.append(total)
        if on_step:
            on_step(step + 1, total)
        if checkpoint_dir and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            if distributed.is_main():
                save_checkpoint(checkpoint_dir, model, optimizer, step + 1, fingerprint)
            distributed.barrier()
    model.eval()
    return SFTResult(losses, tokens)

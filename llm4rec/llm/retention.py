"""Text retention: how much of its language ability an LLM recommender keeps, as the model's
perplexity on a fixed sample of general English before and after training.

The default sample is public-domain prose shipped by a Debian package, not text written here:
Ambrose Bierce's *The Devil's Dictionary* (1911, "A Public Domain Text, Copyright Expired"),
package `dict-devil` (`make env` installs it), in dictd's gzip-compatible format. The sample is
its first `chars` characters from the preface on, each line stripped of its indentation, and is
checked against a pinned sha256, so every run of every grid scores the same text.

Compute nodes often lack the Debian path: validating a grid (`load_grid`, on the machine that runs
Snakemake) writes the sample itself to `<results>/<grid>/text_retention/<sha256>.txt`, and a job
reads that copy (`LLM4REC_TEXT_SAMPLES`, set by the runner) when `path` is not there. A grid whose
sample can be found nowhere fails at validation, before any job starts.

Perplexity is exp(mean next-token NLL) over consecutive windows of `window` tokens (the first
token of a window is context, not predicted), through the model's own language-model head.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

DEVIL_DICT = "/usr/share/dictd/devil.dict.dz"
DEVIL_SHA256 = "012303bb2a49d71e84bc697af26bb5dc6069c329f545c9a69941a82af66f4b47"
SHIPPED_ENV = "LLM4REC_TEXT_SAMPLES"  # a folder of <sha256>.txt samples shipped with the results


@dataclass(frozen=True)
class TextRetentionConfig:
    enabled: bool = True
    path: str = DEVIL_DICT  # a text file, or a gzip (.gz/.dz) one
    start: str = "PREFACE"  # the sample starts at the first occurrence of this marker
    chars: int = 16000  # ~3,900 SmolLM2 tokens
    sha256: str = DEVIL_SHA256  # of the sample (after stripping), so the text cannot drift silently
    window: int = 512


def _shipped(cfg: TextRetentionConfig, folder: str | Path | None = None) -> Path | None:
    import os

    folder = folder or os.environ.get(SHIPPED_ENV)
    return Path(folder) / f"{cfg.sha256}.txt" if folder else None


def load_sample(cfg: TextRetentionConfig, shipped: str | Path | None = None) -> str:
    """The pinned sample: from `cfg.path`, else from the copy shipped with the results (`shipped`,
    default $LLM4REC_TEXT_SAMPLES); checked against `cfg.sha256` either way."""
    path = Path(cfg.path)
    copy = _shipped(cfg, shipped)
    if not path.is_file():
        if copy is not None and copy.is_file():
            return _checked(copy.read_text(encoding="utf-8"), cfg, copy)
        elsewhere = f" (nor a shipped copy at {copy})" if copy is not None else ""
        raise FileNotFoundError(
            f"text retention: '{path}' not found{elsewhere}. The default sample ships in Debian's "
            "dict-devil package (`make env` installs it; or apt-get install dict-devil), or set "
            "params text_retention.path/sha256 to another text, or text_retention.enabled: false"
        )
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    begin = text.find(cfg.start)
    if begin < 0:
        raise ValueError(
            f"text retention: '{path}' has no '{cfg.start}' to start the sample at "
            "(text_retention.start)"
        )
    lines = "\n".join(line.strip() for line in text[begin:].splitlines())
    return _checked(lines[: cfg.chars], cfg, path)


def _checked(sample: str, cfg: TextRetentionConfig, path: Path) -> str:
    digest = hashlib.sha256(sample.encode("utf-8")).hexdigest()
    if digest != cfg.sha256:
        raise ValueError(
            f"text retention: the sample of '{path}' ({cfg.chars} chars from '{cfg.start}') has "
            f"sha256 {digest}, expected {cfg.sha256} (text_retention.sha256): the file is not the "
            "pinned text"
        )
    return sample


def ship_sample(cfg: TextRetentionConfig, folder: str | Path) -> Path:
    """Write the pinned sample to `folder`/<sha256>.txt (once; atomically) so that jobs on machines
    without `cfg.path` read it there; raise as `load_sample` does when it can be found nowhere."""
    from llm4rec.io import write_text

    target = _shipped(cfg, folder)
    if target.is_file():
        _checked(target.read_text(encoding="utf-8"), cfg, target)
        return target
    return write_text(target, load_sample(cfg, folder))


@torch.no_grad()
def perplexity(
    model, tokenizer, text: str, window: int = 512, device: str = "cpu", batch: int = 8
) -> float:
    """exp of the mean NLL of every token but the first of each `window`-token chunk of `text`."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    chunks = [ids[i : i + window] for i in range(0, len(ids), window)]
    chunks = [c for c in chunks if len(c) > 1]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for begin in range(0, len(chunks), batch):
            group = chunks[begin : begin + batch]
            length = max(len(c) for c in group)
            input_ids = torch.zeros((len(group), length), dtype=torch.long)
            mask = torch.zeros((len(group), length), dtype=torch.long)
            for row, chunk in enumerate(group):
                input_ids[row, : len(chunk)], mask[row, : len(chunk)] = chunk, 1
            logits = model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device)
            ).logits.float()
            targets = input_ids[:, 1:].to(device).masked_fill(mask[:, 1:].to(device) == 0, -100)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
            )
            total, count = total + float(nll), count + int((targets != -100).sum())
    finally:
        model.train(was_training)
    return math.exp(total / count)


def retention_costs(before: float, after: float) -> dict[str, float]:
    return {"text_ppl_before": before, "text_ppl_after": after}

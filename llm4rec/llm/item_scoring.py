"""One-forward scoring over the whole catalogue: an LLM whose output side is a layer over items
(IDIOMoE's restricted item softmax, E4SRec's prediction layer) ranks a batch of users with one
forward pass and a `topk`, instead of decoding identifiers token by token.

`log_popularity_prior` is the shared starting point of such a layer's per-item bias: with a zero
weight, the untrained layer ranks exactly as MostPop, and training moves off it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from llm4rec.data.split import Split
from llm4rec.llm.decoding import DecodeStats


def log_popularity_prior(split: Split, items: Sequence[str]) -> torch.Tensor:
    """log(1 + training count) of each item, in `items` order (float32)."""
    counts = split.phase("train")["item_id"].astype(str).value_counts()
    return torch.tensor([np.log1p(counts.get(item, 0)) for item in items], dtype=torch.float32)


# what such a ranking counts (no beams, no decoded tokens)
ONE_FORWARD_COUNTS = (
    "users",
    "prompt_tokens",
    "tokens",
)


def one_forward_costs(stats: dict[str, float]) -> dict[str, float]:
    """The decoding counts (`DecodeStats.as_dict`) that mean something for a one-forward ranking."""
    return {key: stats[key] for key in ONE_FORWARD_COUNTS}


def top_unseen_items(
    logits: torch.Tensor,
    histories: Sequence[Sequence[str]],
    index: dict[str, int],
    items: Sequence[str],
    k: int,
    stats: DecodeStats | None = None,
    mask: torch.Tensor | None = None,
) -> list[list[tuple[str, float]]]:
    """Per row of `logits` ([users, n_items], columns in `items` order): the top-k items outside
    that user's history, scored by log-softmax over the catalogue (history excluded), best first.
    With `stats`, counts the users and their prompt tokens (`mask`: the prompts' attention mask)."""
    if stats is not None:
        stats.users += len(histories)
        stats.prompt_tokens += int(mask.sum()) if mask is not None else 0
    logits = logits.float().clone()
    for row, history in enumerate(histories):
        if history:
            logits[row, [index[i] for i in history]] = -torch.inf
    scores, top = torch.topk(torch.log_softmax(logits, dim=-1), min(k, logits.shape[1]), dim=-1)
    return [
        [
            (items[int(i)], float(s))
            for s, i in zip(srow.tolist(), irow.tolist(), strict=True)
            if s > -np.inf
        ]
        for srow, irow in zip(scores, top, strict=True)
    ]

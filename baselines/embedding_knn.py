"""Embedding kNN: rank items by cosine similarity to the mean of the user's history embeddings.

The worked example of a model that consumes another run's export (README, "Adding a model"):
it trains nothing itself; its `embeddings` input is the item embeddings of a finished run of
the grid (default BPR, same dataset and seed) or of an artifact (`item_text_lsa`: a
content-based kNN). The workflow resolves the input, runs the upstream first, reruns this
model when the upstream changes, and puts the upstream's config hash into this run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, baseline_estimate
from llm4rec.models import RANKING_COLUMNS, BuildSpec, Histories, ResolvedInput


@dataclass(frozen=True)
class EmbeddingKnnConfig:
    recent: int = 0  # use only the last N history items (0: all of them)


class EmbeddingKnn:
    def __init__(self, cfg: EmbeddingKnnConfig, embeddings: ResolvedInput):
        self.cfg, self.source = cfg, embeddings

    def fit(self, split: Split, workdir: Path) -> dict:
        path = self.source.paths["item_embeddings.npy"]
        vectors = np.load(path)
        if vectors.ndim != 2 or vectors.shape[0] != len(split.items):
            raise ValueError(
                f"{path} (from {self.source.source}): {vectors.shape[0]} rows, but this run's "
                f"catalogue (items.parquet) has {len(split.items)} items; the input was built on "
                "another catalogue"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = vectors / np.where(norms == 0, 1, norms)
        self.items = split.items["item_id"].to_numpy()
        self.row = {item: i for i, item in enumerate(self.items)}
        return {"input": self.source.source, "parameters_total": 0, "parameters_trainable": 0}

    def rank(self, histories: Histories, k: int) -> pd.DataFrame:
        rows = []
        for user in sorted(histories):
            history = [self.row[i] for i in histories[user]]
            recent = history[-self.cfg.recent :] if self.cfg.recent else history
            scores = (
                self.vectors @ self.vectors[recent].mean(axis=0)
                if recent
                else np.zeros(len(self.items))
            )
            scores[history] = -np.inf
            top = np.argsort(-scores, kind="stable")[:k]
            rows += [
                (user, r + 1, self.items[i], float(scores[i]))
                for r, i in enumerate(top)
                if np.isfinite(scores[i])
            ]
        return pd.DataFrame(rows, columns=RANKING_COLUMNS)

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        return {}

    def inference_cost(self) -> dict[str, float]:
        return {}


def build(spec: BuildSpec) -> EmbeddingKnn:
    return EmbeddingKnn(spec.config, spec.inputs["embeddings"])


def estimate_cost(config: EmbeddingKnnConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: nothing trained, a cosine per user and item at ranking."""
    return baseline_estimate(config, cell)

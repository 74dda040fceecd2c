"""Per-user top-K ranking metrics as pure functions over arrays.

Definitions (identical to RecBole's, so numbers are comparable with its evaluator):
- HR@k      1 if any target is in the top k, else 0.
- Recall@k  |targets in top k| / |targets|.
- NDCG@k    sum_{hit at rank r <= k} 1/log2(r+1)  /  sum_{r=1}^{min(|targets|, k)} 1/log2(r+1).
- MRR@k     1 / rank of the first target in the top k, 0 if none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("hr", "recall", "ndcg", "mrr")
# The validation metric that picks epochs and checkpoints unless a grid names another
# (evaluation.selection_metric); every model's `selection` argument defaults to it.
SELECTION_METRIC = "ndcg_at_10"


def hit_matrix(
    ranked: Sequence[Sequence[str]], targets: Sequence[Sequence[str]], k: int
) -> np.ndarray:
    """Boolean [n_users, k]: is the item at rank r a target of the user (short lists pad False)."""
    hits = np.zeros((len(ranked), k), dtype=bool)
    for u, (items, target) in enumerate(zip(ranked, targets, strict=True)):
        target_set = set(target)
        for r, item in enumerate(items[:k]):
            hits[u, r] = item in target_set
    return hits


def per_user_metrics(
    hits: np.ndarray, n_targets: np.ndarray, cutoffs: Sequence[int]
) -> dict[str, np.ndarray]:
    """{'ndcg_at_10': array[n_users], ...} for every metric in METRICS and cutoff."""
    n_users, depth = hits.shape
    if max(cutoffs) > depth:
        raise ValueError(f"cutoff {max(cutoffs)} exceeds the ranking depth {depth}")
    n_targets = np.asarray(n_targets, dtype=np.float64)
    if (n_targets < 1).any():
        raise ValueError("every evaluated user needs at least one target item")
    discounts = 1.0 / np.log2(np.arange(2, depth + 2))
    cum_hits = np.cumsum(hits, axis=1)
    dcg = np.cumsum(hits * discounts, axis=1)
    ideal = np.cumsum(discounts)
    ranks = np.arange(1, depth + 1)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, depth + 1)
    out: dict[str, np.ndarray] = {}
    for k in cutoffs:
        idcg = ideal[np.minimum(n_targets, k).astype(int) - 1]
        out[f"hr_at_{k}"] = (cum_hits[:, k - 1] > 0).astype(np.float64)
        out[f"recall_at_{k}"] = cum_hits[:, k - 1] / n_targets
        out[f"ndcg_at_{k}"] = dcg[:, k - 1] / idcg
        out[f"mrr_at_{k}"] = np.where(first_hit <= k, 1.0 / np.minimum(first_hit, ranks[-1]), 0.0)
    return out


def metric_cutoff(metric: str) -> int:
    """'ndcg_at_10' -> 10."""
    return int(metric.rsplit("_", 1)[1])

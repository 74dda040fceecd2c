"""The one evaluator: every model's rankings are scored here, against the harness's split.

Input: a rankings table (user_id, rank, item_id) per phase. Candidate set: the whole
catalogue minus the user's history (train items for validation; train + validation items
for test). A ranking that contains a history item, an unknown item, or a duplicate is
refused: it would make the number incomparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from llm4rec.data.split import Split
from llm4rec.evaluation.metrics import hit_matrix, metric_cutoff, per_user_metrics

POPULARITY_BUCKETS = ("head", "torso", "tail")


def popularity_buckets(popularity: pd.Series) -> pd.Series:
    """head / torso / tail per item by the share of training interactions that go to strictly
    more popular items: < 1/3 head, < 2/3 torso, else tail (equal-interaction thirds; items
    with equal popularity always share a bucket)."""
    total = max(float(popularity.sum()), 1.0)
    counts = popularity.value_counts().sort_index(ascending=False)  # popularity value -> #items
    mass = counts.index.to_numpy(dtype=float) * counts.to_numpy()
    share_before = pd.Series((np.cumsum(mass) - mass) / total, index=counts.index)
    share = popularity.map(share_before).to_numpy()
    return pd.Series(
        np.where(share < 1 / 3, "head", np.where(share < 2 / 3, "torso", "tail")),
        index=popularity.index,
    )


class RankingError(ValueError):
    """A ranking that breaks the protocol (history item, unknown item, duplicate, missing user)."""


# What the evaluator computes, versioned: the evaluate rule's params carry it, so a change of what
# a finished run's metrics mean re-evaluates every run (and retrains nothing). 2: the steerability
# post-filter runs over the whole ranked list (1 filtered only its first max-cutoff items). 3:
# counterfactual requests, chance rates and lifts; the post-filter at one depth for every model.
EVALUATOR_VERSION = 3


def sample_users(users: Sequence[str], n: int | None, seed: int = 0) -> list[str]:
    """A seeded uniform sample of `n` users (sorted), or all of them when n is None or >= len.
    It depends only on (users, n, seed), so every model asking for n users gets the same ones."""
    users = sorted(users)
    if n is None or n >= len(users):
        return users
    rng = np.random.default_rng(seed)
    return sorted(users[i] for i in rng.choice(len(users), size=n, replace=False))


def rankings_to_lists(rankings: pd.DataFrame) -> dict[str, list[str]]:
    ordered = rankings.sort_values(["user_id", "rank"], kind="stable")
    return {u: g.tolist() for u, g in ordered.groupby("user_id", sort=True)["item_id"]}


def check_rankings(
    lists: dict[str, list[str]],
    catalogue: set[str],
    history: dict[str, list[str]],
    targets: dict[str, list[str]],
    phase: str,
    k: int,
    source: str,
) -> None:
    missing = sorted(set(targets) - set(lists))
    if missing:
        raise RankingError(
            f"{source}: no {phase} ranking for {len(missing)} users (e.g. {missing[:3]})"
        )
    for user, items in lists.items():
        if len(items) != len(set(items)):
            raise RankingError(f"{source}: user {user} has duplicate items in the ranking")
        unknown = set(items) - catalogue
        if unknown:
            raise RankingError(
                f"{source}: user {user} ranks items not in the catalogue: {sorted(unknown)[:3]}"
            )
        seen = set(items[:k]) & set(history.get(user, ()))
        if seen:
            raise RankingError(
                f"{source}: user {user} ranks history items {sorted(seen)[:3]} (candidate set "
                "excludes them)"
            )


def evaluate_rankings(
    rankings: pd.DataFrame,
    split: Split,
    phase: str,
    cutoffs: Sequence[int],
    source: str = "rankings",
    users: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Score one phase's rankings: per-user metrics (one row per target user) and run-level means.
    `users`: score only these target users (a declared sample, see `sample_users`); default all.

    Per user, it also records history length and the (first) target item with its training
    popularity and head/torso/tail bucket, for slicing. Run level adds, per cutoff, catalogue
    coverage (share of catalogue items recommended to anyone) and popularity bias (mean training
    popularity of recommended items).
    """
    k = max(cutoffs)
    lists = rankings_to_lists(rankings)
    targets, history = split.targets(phase), split.history(phase)
    if users is not None:
        unknown = sorted(set(users) - set(targets))
        if unknown:
            raise RankingError(f"{source}: users {unknown[:3]} are not {phase} users of this split")
        targets = {u: targets[u] for u in users}
        lists = {u: items for u, items in lists.items() if u in targets}
    check_rankings(lists, set(split.items["item_id"]), history, targets, phase, k, source)
    users = sorted(targets)
    ranked = [lists[u] for u in users]
    hits = hit_matrix(ranked, [targets[u] for u in users], k)
    metrics = per_user_metrics(hits, np.array([len(targets[u]) for u in users]), cutoffs)
    popularity = split.item_popularity()
    first_target = [targets[u][0] for u in users]
    per_user = pd.DataFrame(
        {
            "user_id": users,
            "n_targets": [len(targets[u]) for u in users],
            "history_length": [len(history.get(u, ())) for u in users],
            "target_item": first_target,
            "target_popularity": popularity.loc[first_target].to_numpy(),
            "target_bucket": popularity_buckets(popularity).loc[first_target].to_numpy(),
            **metrics,
        }
    )
    summary = {name: float(values.mean()) for name, values in metrics.items()}
    n_catalogue = len(split.items)
    for c in cutoffs:
        top = [item for items in ranked for item in items[:c]]
        summary[f"coverage_at_{c}"] = len(set(top)) / n_catalogue
        summary[f"avg_popularity_at_{c}"] = float(popularity.loc[top].mean()) if top else 0.0
    summary["n_users"] = float(len(users))
    return per_user, summary


def selection_score(
    rankings: pd.DataFrame, split: Split, metric: str, users: Sequence[str] | None = None
) -> float:
    """The validation score that picks epochs and checkpoints (e.g. 'ndcg_at_10'), through the
    one evaluator, on all validation users or the given sample."""
    _, summary = evaluate_rankings(
        rankings, split, "valid", [metric_cutoff(metric)], source="selection", users=users
    )
    return summary[metric]

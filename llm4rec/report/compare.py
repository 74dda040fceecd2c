"""Paired comparisons between finished runs: the family of tests behind a table.

Pairing: two models are compared on one dataset over the seeds both have; within a seed,
users are paired by id. When one model was scored on a declared sample of the other's users
(a costly model's `evaluation.test_users`), the pair is tested on that sample. Runs on
different splits, or with user sets that are not nested, are refused with a message naming
both runs (never silently compared). Seeds are respected by averaging
each user's metric over seeds before the paired test (see llm4rec.stats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from itertools import combinations

import numpy as np
import pandas as pd

from llm4rec.report.runs import RunRecord
from llm4rec.stats import Comparison, compare_pair, correct, seed_aware_arrays

LOWER_IS_BETTER = {"avg_popularity_at_5", "avg_popularity_at_10", "avg_popularity_at_20", "avg_popularity_at_50"}


class ComparisonError(ValueError):
    """Runs that cannot be compared pairwise (different splits or users)."""


@dataclass(frozen=True)
class CompareSpec:
    metrics: Sequence[str] = ("hr_at_10", "ndcg_at_10")
    test: str = "t"  # t | wilcoxon | randomization
    correction: str = "holm"  # holm | bonferroni | bh | none
    alpha: float = 0.05
    mode: str = "best_baseline"  # best_baseline | all_pairs
    rounds: int = 10_000  # randomization test rounds
    bootstrap_rounds: int = 2000
    seed: int = 0


def by_model(runs: Sequence[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.model), []).append(r)
    return groups


def mean_over_seeds(runs: Sequence[RunRecord], metric: str) -> float:
    return float(np.mean([r.metrics["test"][metric] for r in runs]))


def paired_per_user(runs_a: Sequence[RunRecord], runs_b: Sequence[RunRecord], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-user metric arrays of two models, averaged over their common seeds."""
    seeds_a, seeds_b = {r.seed: r for r in runs_a}, {r.seed: r for r in runs_b}
    common = sorted(set(seeds_a) & set(seeds_b))
    if not common:
        raise ComparisonError(f"{runs_a[0].label} and {runs_b[0].label}: no seed in common "
                              f"({sorted(seeds_a)} vs {sorted(seeds_b)})")
    arrays_a, arrays_b = [], []
    users = None
    for seed in common:
        a, b = seeds_a[seed], seeds_b[seed]
        if a.split_checksums != b.split_checksums:
            raise ComparisonError(f"{a.label} ({a.folder}) and {b.label} ({b.folder}) were evaluated on different splits")
        ua, ub = a.per_user().set_index("user_id"), b.per_user().set_index("user_id")
        shared = set(ua.index) & set(ub.index)
        if shared not in (set(ua.index), set(ub.index)):
            raise ComparisonError(f"{a.label} and {b.label} have different test users, neither a sample of the other "
                                  f"({len(ua)} vs {len(ub)}, {len(set(ua.index) ^ set(ub.index))} differ)")
        order = sorted(shared) if users is None else users
        if users is not None and set(order) != shared:
            raise ComparisonError(f"{a.label}: test users differ from seed {common[0]} of the same model")
        users = order
        arrays_a.append(ua.loc[users, metric].to_numpy())
        arrays_b.append(ub.loc[users, metric].to_numpy())
    return seed_aware_arrays(arrays_a, arrays_b)


def best_baseline(groups: dict[tuple[str, str], list[RunRecord]], dataset: str, metric: str) -> str | None:
    """The baseline with the best validation mean on (dataset, metric), as a paper would have chosen it
    before seeing the test split; None if the dataset has no baseline."""
    candidates = {m: float(np.mean([r.metrics["valid"][metric] for r in rs])) for (d, m), rs in groups.items()
                  if d == dataset and rs[0].paradigm == "baseline" and all(metric in r.metrics.get("valid", {}) for r in rs)}
    if not candidates:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(candidates, key=candidates.get)


def compare_runs(runs: Sequence[RunRecord], spec: CompareSpec) -> pd.DataFrame:
    """Every comparison of the table's family, with p-values adjusted over that family."""
    groups = by_model(runs)
    datasets = sorted({r.dataset for r in runs})
    rows = []
    for dataset in datasets:
        models = sorted(m for d, m in groups if d == dataset)
        for metric in spec.metrics:
            if spec.mode == "best_baseline":
                reference = best_baseline(groups, dataset, metric)
                pairs = [(m, reference) for m in models if reference and m != reference]
            elif spec.mode == "all_pairs":
                pairs = list(combinations(models, 2))
            else:
                raise ValueError(f"unknown comparison mode '{spec.mode}' (known: best_baseline, all_pairs)")
            for system, reference in pairs:
                if any(metric not in r.metrics["test"] for r in groups[(dataset, system)] + groups[(dataset, reference)]):
                    continue  # a cutoff beyond one model's ranking depth: nothing to compare
                a, b = paired_per_user(groups[(dataset, system)], groups[(dataset, reference)], metric)
                comparison = compare_pair(a, b, dataset=dataset, metric=metric, system=system, reference=reference,
                                          test=spec.test, rounds=spec.rounds, seed=spec.seed,
                                          bootstrap_rounds=spec.bootstrap_rounds)
                rows.append(asdict(comparison) | {"n_users": len(a), "n_seeds": len({r.seed for r in groups[(dataset, system)]})})
    table = pd.DataFrame(rows, columns=[f.name for f in fields(Comparison)] + ["n_users", "n_seeds"])
    if len(table):
        table["p_adjusted"] = correct(table["p_value"].to_numpy(), spec.correction)
        table["significant"] = table["p_adjusted"] < spec.alpha
    table.attrs["family_size"] = len(table)
    return table

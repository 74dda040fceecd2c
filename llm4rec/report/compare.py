"""Paired comparisons between finished runs: the family of tests behind a table.

Pairing: two models are compared on one dataset over the seeds both have; within a seed,
users are paired by id. When one model was scored on a declared sample of the other's users
(a costly model's `evaluation.test_users`), the pair is tested on that sample. Runs on
different splits, or with user sets that are not nested, are refused with a message naming
both runs (never silently compared).

Two tests per pair, each corrected over its own family:
- over users: each user's metric averaged over the common seeds, then the paired test of the spec
  (t, Wilcoxon or randomization) with users as the unit; it counts user variance only;
- over seeds (two or more common seeds): a paired t-test on the per-seed means, seeds as the unit;
  it counts training variance, the variance a rerun would show.

Families: `main` (every model against the column's best baseline, chosen on validation, or all
pairs) and `ablation` (every registry variant against its declared `parent`, and every row against
the references its registry entry declares: `ModelSpec.references`), each with its own correction.
A row that ranked with a request (written from the target) is in neither: the steer table compares
it with itself without the request and with request-aware references. The means a comparison
reports (`mean_system`, `mean_reference`) are over the paired sample, the numbers the tests were
computed on; the tables print them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from itertools import combinations

import numpy as np
import pandas as pd

from llm4rec import schema
from llm4rec.report.runs import RunRecord
from llm4rec.stats import (
    Comparison,
    compare_pair,
    correct,
    minimum_detectable_effect,
    seed_aware_arrays,
    seed_level_test,
)

LOWER_IS_BETTER = {
    "avg_popularity_at_5",
    "avg_popularity_at_10",
    "avg_popularity_at_20",
    "avg_popularity_at_50",
}


class ComparisonError(ValueError):
    """Runs that cannot be compared pairwise (different splits or users)."""


_REPORT = schema.defaults("report")  # the grid's `report` options a spec is made of (ReportSpec)


@dataclass(frozen=True)
class CompareSpec:
    metrics: Sequence[str] = tuple(_REPORT["metrics"])
    test: str = _REPORT["test"]  # t | wilcoxon | randomization
    correction: str = _REPORT["correction"]  # holm | bonferroni | bh | none
    alpha: float = _REPORT["alpha"]
    mode: str = _REPORT["comparisons"]  # best_baseline | all_pairs
    # a row scored on fewer test users is not ranked in a table: the diagnostics table holds it
    min_users: int = _REPORT["min_users"]
    rounds: int = _REPORT["randomization_rounds"]  # randomization test rounds
    bootstrap_rounds: int = _REPORT["bootstrap_rounds"]
    seed: int = _REPORT["seed"]


def by_model(runs: Sequence[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.model), []).append(r)
    return groups


@dataclass(frozen=True)
class PairedSample:
    """Two models' per-user metric on the seeds both have and, within each, the users both scored
    (one array per seed, users in the same order)."""

    seeds: tuple[int, ...]
    users: tuple[str, ...]
    per_seed_a: tuple[np.ndarray, ...]
    per_seed_b: tuple[np.ndarray, ...]

    def seed_averaged(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's metric averaged over the common seeds (the per-user test's sample)."""
        return seed_aware_arrays(list(self.per_seed_a), list(self.per_seed_b))


def paired_sample(
    runs_a: Sequence[RunRecord], runs_b: Sequence[RunRecord], metric: str
) -> PairedSample:
    """The paired sample of two models on one dataset; refuses different splits or non-nested
    user sets."""
    seeds_a, seeds_b = {r.seed: r for r in runs_a}, {r.seed: r for r in runs_b}
    common = sorted(set(seeds_a) & set(seeds_b))
    if not common:
        raise ComparisonError(
            f"{runs_a[0].label} and {runs_b[0].label}: no seed in common "
            f"({sorted(seeds_a)} vs {sorted(seeds_b)})"
        )
    arrays_a, arrays_b = [], []
    users = None
    for seed in common:
        a, b = seeds_a[seed], seeds_b[seed]
        if a.split_checksums != b.split_checksums:
            raise ComparisonError(
                f"{a.label} ({a.folder}) and {b.label} ({b.folder}) were evaluated on different "
                "splits"
            )
        ua, ub = a.per_user().set_index("user_id"), b.per_user().set_index("user_id")
        shared = set(ua.index) & set(ub.index)
        if shared not in (set(ua.index), set(ub.index)):
            raise ComparisonError(
                f"{a.label} and {b.label} have different test users, neither a sample of the other "
                f"({len(ua)} vs {len(ub)}, {len(set(ua.index) ^ set(ub.index))} differ)"
            )
        order = sorted(shared) if users is None else users
        if users is not None and set(order) != shared:
            raise ComparisonError(
                f"{a.label}: test users differ from seed {common[0]} of the same model"
            )
        users = order
        arrays_a.append(ua.loc[users, metric].to_numpy(dtype=np.float64))
        arrays_b.append(ub.loc[users, metric].to_numpy(dtype=np.float64))
    return PairedSample(tuple(common), tuple(users), tuple(arrays_a), tuple(arrays_b))


def best_baseline(
    groups: dict[tuple[str, str], list[RunRecord]], dataset: str, metric: str
) -> str | None:
    """The baseline with the best validation mean on (dataset, metric), as a paper would have
    chosen it before seeing the test split; None if the dataset has no baseline."""
    candidates = {
        m: float(np.mean([r.metrics["valid"][metric] for r in rs]))
        for (d, m), rs in groups.items()
        if d == dataset
        and rs[0].paradigm == "baseline"
        and not _reads_requests(rs)
        and all(metric in r.metrics.get("valid", {}) for r in rs)
    }
    if not candidates:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(candidates, key=candidates.get)


def declared_references(model: str, runs: Sequence[RunRecord]) -> list[str]:
    """The models a row's registry entry says its ablation also tests it against
    (`ModelSpec.references`): names, and "input:<slot>" resolved to the run it consumed there."""
    from llm4rec.models import MODELS

    out = []
    for reference in MODELS[model].references if model in MODELS else ():
        if reference.startswith("input:"):
            consumed = {r.consumed_run(reference.removeprefix("input:")) for r in runs}
            out += sorted(m for m in consumed if m)
        else:
            out.append(reference)
    return out


def ablation_pairs(
    groups: dict[tuple[str, str], list[RunRecord]], dataset: str
) -> list[tuple[str, str]]:
    """(row, reference) on `dataset`: every variant against its declared parent, and every row
    against the references its registry entry declares (`declared_references`), where both ran
    there. Rows that read a request are left out: the steer table compares them."""
    from llm4rec.models import MODELS

    models = {m for d, m in groups if d == dataset and not _reads_requests(groups[(d, m)])}
    pairs = set()
    for m in models:
        parent = MODELS[m].parent if m in MODELS else None
        if parent in models:
            pairs.add((m, parent))
        pairs |= {(m, r) for r in declared_references(m, groups[(dataset, m)]) if r in models}
    return sorted(pairs)


def _reads_requests(runs: Sequence[RunRecord]) -> bool:
    return any(r.reads_requests for r in runs)


def table_of(model: str) -> str:
    """The table a row's comparisons belong to (`ModelSpec.table`): accuracy, or beam_vs_exact
    (an exact-ranking row against its parent's beam)."""
    from llm4rec.models import MODELS

    return MODELS[model].table if model in MODELS else "accuracy"


def main_pairs(
    groups: dict[tuple[str, str], list[RunRecord]], dataset: str, metric: str, mode: str
) -> list[tuple[str, str]]:
    """The main family's pairs on `dataset` (rows that read a request are never in it)."""
    models = sorted(
        m
        for d, m in groups
        if d == dataset and not _reads_requests(groups[(d, m)]) and table_of(m) == "accuracy"
    )
    if mode == "best_baseline":
        reference = best_baseline(groups, dataset, metric)
        return [(m, reference) for m in models if reference and m != reference]
    if mode == "all_pairs":
        return list(combinations(models, 2))
    raise ValueError(f"unknown comparison mode '{mode}' (known: best_baseline, all_pairs)")


COMPARISON_COLUMNS = [f.name for f in fields(Comparison)] + [
    "family",
    "n_users",
    "seeds",
    "n_seeds",
    "p_seed",
    "p_seed_adjusted",
    "significant_seed",
    "family_size",
    "mde",
    "mde_alpha",
    "verdict_from",
]

# The families of comparisons, each corrected on its own: the main table's (every row against the
# best baseline), the ablation table's (variant against parent, row against a declared reference),
# the exact-ranking rows against their parents' beams, and every comparison of a row scored on
# fewer than `min_users` test users (no table ranks it: the diagnostics table shows it)
FAMILIES = ("main", "ablation")
ALL_FAMILIES = ("main", "ablation", "beam_vs_exact", "diagnostic")
POWER = 0.8  # the power the minimum detectable effect is stated at


def _family_of(family: str, system: str, n_users: int, spec: CompareSpec) -> str:
    if family == "ablation" and table_of(system) == "beam_vs_exact":
        return "beam_vs_exact"
    return "diagnostic" if n_users < spec.min_users else family


def pair_key(frame: pd.DataFrame) -> pd.Series:
    """What makes two comparisons the same pair: dataset, system, reference, metric, the seeds and
    the number of users."""
    return (
        frame["dataset"].astype(str)
        + "|" + frame["system"].astype(str)
        + "|" + frame["reference"].astype(str)
        + "|" + frame["metric"].astype(str)
        + "|" + frame["seeds"].astype(str)
        + "|" + frame["n_users"].astype(int).astype(str)
    )  # fmt: skip


def compare_runs(
    runs: Sequence[RunRecord],
    spec: CompareSpec,
    families: Sequence[str] = FAMILIES,
    verdicts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every comparison of the table's family (`family` == "main") and of the ablation family
    (each variant against its parent and its declared references), each pair's test chosen for its
    metric (`choose_test`), p-values adjusted within each family (`ALL_FAMILIES`), per-user and
    per-seed tests apart, and the minimum detectable effect at 80% power of each; `families` picks
    which. `verdicts`: an earlier report's comparisons (the main report's, for the ablation
    report): a main-family pair it already tested keeps its verdict there (one verdict per pair)
    and is left out of this family's correction."""
    groups = by_model(runs)
    rows = []
    for dataset in sorted({r.dataset for r in runs}):
        for kind in families:
            for metric in spec.metrics:
                pairs = (
                    main_pairs(groups, dataset, metric, spec.mode)
                    if kind == "main"
                    else ablation_pairs(groups, dataset)
                )
                for system, reference in pairs:
                    if any(
                        metric not in r.metrics["test"]
                        for r in groups[(dataset, system)] + groups[(dataset, reference)]
                    ):
                        continue  # a cutoff beyond one model's ranking depth: nothing to compare
                    sample = paired_sample(
                        groups[(dataset, system)], groups[(dataset, reference)], metric
                    )
                    a, b = sample.seed_averaged()
                    comparison = compare_pair(
                        a,
                        b,
                        dataset=dataset,
                        metric=metric,
                        system=system,
                        reference=reference,
                        test=spec.test,
                        rounds=spec.rounds,
                        seed=spec.seed,
                        bootstrap_rounds=spec.bootstrap_rounds,
                    )
                    rows.append(
                        asdict(comparison)
                        | {
                            "family": _family_of(kind, system, len(a), spec),
                            "n_users": len(a),
                            "seeds": " ".join(map(str, sample.seeds)),
                            "n_seeds": len(sample.seeds),
                            "p_seed": seed_level_test(
                                list(sample.per_seed_a), list(sample.per_seed_b)
                            ),
                            "verdict_from": "",
                        }
                    )
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    table["significant"] = table["significant"].astype(bool)
    table["significant_seed"] = False
    table["p_seed_adjusted"] = np.nan
    kept = pd.Series(False, index=table.index)
    if verdicts is not None and len(table) and len(verdicts) and "seeds" in verdicts:
        earlier = family(verdicts, "main").assign(_key=lambda f: pair_key(f)).set_index("_key")
        keys = pair_key(table)
        kept = (table["family"] == "main") & keys.isin(earlier.index)
        for column in ("p_adjusted", "significant", "p_seed_adjusted", "significant_seed"):
            table.loc[kept, column] = earlier.loc[keys[kept], column].to_numpy()
        table.loc[kept, "family_size"] = earlier.loc[keys[kept], "family_size"].to_numpy()
        table.loc[kept, "verdict_from"] = "main report"
    for name in ALL_FAMILIES:
        mine = (table["family"] == name) & ~kept
        table.loc[mine, "p_adjusted"] = correct(
            table.loc[mine, "p_value"].to_numpy(dtype=np.float64), spec.correction
        )
        seeded = mine & table["p_seed"].notna()
        table.loc[seeded, "p_seed_adjusted"] = correct(
            table.loc[seeded, "p_seed"].to_numpy(dtype=np.float64), spec.correction
        )
        table.loc[mine, "family_size"] = int(mine.sum())
        table.loc[mine, "significant"] = table.loc[mine, "p_adjusted"].astype(float) < spec.alpha
        # NaN (fewer than 3 seeds): False
        table.loc[mine, "significant_seed"] = (
            table.loc[mine, "p_seed_adjusted"].astype(float) < spec.alpha
        )
    table["significant"] = table["significant"].astype(bool)
    table["significant_seed"] = table["significant_seed"].astype(bool)
    # power: the smallest difference each test detects with 80% power at the family's Bonferroni
    # level alpha / m (Holm's first threshold, so a conservative statement for the others)
    table["mde_alpha"] = spec.alpha / table["family_size"].astype(float).clip(lower=1)
    table["mde"] = [
        minimum_detectable_effect(float(sd), int(n), float(level), POWER)
        if np.isfinite(sd)
        else np.nan
        for sd, n, level in zip(table["sd_diff"], table["n_users"], table["mde_alpha"], strict=True)
    ]
    table.attrs["family_size"] = int((table["family"] == "main").sum())
    return table


def family(comparisons: pd.DataFrame, name: str) -> pd.DataFrame:
    """One family's rows (comparisons.csv written before families existed holds the main family
    only)."""
    if "family" not in comparisons:
        return comparisons if name == "main" else comparisons.iloc[0:0]
    return comparisons[comparisons["family"] == name]

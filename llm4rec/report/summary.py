"""reports/summary.{md,csv}: mean +/- std over seeds per dataset, model and metric.

Reads only the per-run metrics.json files (the source of truth), so it can be rebuilt for
any subset of finished runs without rerunning anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from llm4rec.io import write_text
from llm4rec.models import paradigm_rank, paradigm_title, registered_costs
from llm4rec.report.runs import runs_from_folders
from llm4rec.report.tables import display_name, format_number

HEADLINE = (
    "n_users",
    "hr_at_10",
    "ndcg_at_10",
    "recall_at_20",
    "ndcg_at_20",
    "mrr_at_10",
    "coverage_at_10",
    "avg_popularity_at_10",
)


def summary_costs() -> tuple[str, ...]:
    return tuple(c.key for c in registered_costs() if c.in_summary)


def collect(metric_files: Iterable[str | Path]) -> pd.DataFrame:
    """Long table: one row per (dataset, model, paradigm, seed, phase, metric)."""
    rows = []
    for run in runs_from_folders(metric_files):
        m = run.metrics
        key = {k: m[k] for k in ("dataset", "model", "paradigm", "seed")}
        for phase in ("valid", "test"):
            rows += [
                key | {"phase": phase, "metric": name, "value": value}
                for name, value in m[phase].items()
            ]
        rows += [
            key | {"phase": "cost", "metric": name, "value": float(m["cost"][name])}
            for name in summary_costs()
            if name in m["cost"]
        ]
    return pd.DataFrame(rows)


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; 0 for one seed) and seed count per dataset/model/phase/metric."""
    grouped = long.groupby(["dataset", "paradigm", "model", "phase", "metric"], sort=False)["value"]
    out = grouped.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out.sort_values(
        ["dataset", "paradigm", "model"],
        key=lambda s: s.map(paradigm_rank) if s.name == "paradigm" else s,
        kind="stable",
    )


def markdown(
    agg: pd.DataFrame, columns: Iterable[str] | None = None, names: Mapping[str, str] | None = None
) -> str:
    columns = columns if columns is not None else HEADLINE + summary_costs()
    lines = [
        "# Summary",
        "",
        "Test-split metrics, mean ± sample std over seeds (the mean alone for a single seed; "
        "full-catalogue ranking, history items excluded); n_users: test users scored (fewer than "
        "all for a model with a declared user sample). Cost columns: train time (s), inference "
        "time per test user (ms), peak memory (MiB), parameters (total, trainable), and for LLM "
        "runs tokens through the model in training and per test user. –: not computed.",
        "",
    ]
    for dataset, block in agg.groupby("dataset", sort=False):
        table = block[block["phase"].isin(["test", "cost"])]
        cols = [c for c in columns if c in set(table["metric"])]
        lines += [
            f"## {dataset}",
            "",
            "| paradigm | model | key | seeds | " + " | ".join(cols) + " |",
            "|---|---|---|---|" + "---|" * len(cols),
        ]
        for (paradigm, model), rows in table.groupby(["paradigm", "model"], sort=False):
            by_metric = rows.set_index("metric")
            cells = [
                format_number(
                    c,
                    by_metric.at[c, "mean"],
                    # ± sample std over seeds; one seed has no spread to show
                    by_metric.at[c, "std"] if by_metric.at[c, "n_seeds"] > 1 else None,
                )
                if c in by_metric.index
                else "–"
                for c in cols
            ]
            lines.append(
                f"| {paradigm_title(paradigm)} | {display_name(model, names)} | `{model}` | "
                f"{int(by_metric['n_seeds'].max())} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def write_summary(
    metric_files: Iterable[str | Path],
    reports_dir: str | Path,
    names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    agg = aggregate(collect(metric_files))
    reports_dir = Path(reports_dir)
    write_text(reports_dir / "summary.csv", agg.to_csv(index=False))
    write_text(reports_dir / "summary.md", markdown(agg, names=names))
    return agg

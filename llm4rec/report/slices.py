"""Where do models differ? Per-user metrics broken down by user history length and by the
target item's popularity (head / torso / tail; see llm4rec.evaluation.evaluate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from llm4rec.evaluation.evaluate import POPULARITY_BUCKETS
from llm4rec.report.compare import by_model
from llm4rec.report.runs import RunRecord
from llm4rec.report.tables import display_name
from llm4rec.stats import bootstrap_mean_ci, mean_ci

SLICES = ("history_length", "target_popularity")


def history_buckets(lengths: pd.Series, n_buckets: int = 4) -> tuple[pd.Series, list[str]]:
    """Quantile buckets of history length (dataset-adaptive), labelled by their integer ranges:
    bucket i holds edges[i] <= length < edges[i+1] (the last one includes the maximum)."""
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)))
    if len(edges) == 1:
        return pd.Series(f"{int(edges[0])}", index=lengths.index), [f"{int(edges[0])}"]
    codes = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    labels = []
    for i in range(len(edges) - 1):
        low = int(np.ceil(edges[i]))
        high = (
            int(np.floor(edges[i + 1])) if i == len(edges) - 2 else int(np.ceil(edges[i + 1])) - 1
        )
        labels.append(f"{low}–{high}")
    return pd.Series([labels[c] for c in codes], index=lengths.index), labels


def slice_frame(runs: Sequence[RunRecord], metric: str, n_history_buckets: int) -> pd.DataFrame:
    """Rows: dataset, model, paradigm, slice, bucket, n_users, mean (over seeds of the bucket
    mean), std, and a 95% interval: over seeds (t) with two or more, over the bucket's users
    (bootstrap) with one (`ci_over`)."""
    rows = []
    for (dataset, model), rs in by_model(runs).items():
        per_seed = []
        for r in rs:
            pu = r.per_user()
            hist, hist_labels = history_buckets(pu["history_length"], n_history_buckets)
            per_seed.append((pu.assign(history_length_bucket=hist.to_numpy()), hist_labels))
        for slice_name, column, labels in (
            ("history_length", "history_length_bucket", per_seed[0][1]),
            ("target_popularity", "target_bucket", list(POPULARITY_BUCKETS)),
        ):
            for bucket in labels:
                means = [pu.loc[pu[column] == bucket, metric].mean() for pu, _ in per_seed]
                n_users = int((per_seed[0][0][column] == bucket).sum())
                if n_users == 0:
                    continue
                if len(means) > 1:
                    _, _, low, high = mean_ci(means)
                else:
                    pu = per_seed[0][0]
                    low, high = bootstrap_mean_ci(
                        pu.loc[pu[column] == bucket, metric].to_numpy(), rounds=1000
                    )
                rows.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "paradigm": rs[0].paradigm,
                        "slice": slice_name,
                        "bucket": bucket,
                        "n_users": n_users,
                        "metric": metric,
                        "mean": float(np.mean(means)),
                        "std": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
                        "ci_low": low,
                        "ci_high": high,
                        "ci_over": "seeds" if len(means) > 1 else "users",
                    }
                )
    return pd.DataFrame(rows)


def render_slices_markdown(frame: pd.DataFrame, names: Mapping[str, str] | None = None) -> str:
    lines = []
    for (dataset, slice_name), block in frame.groupby(["dataset", "slice"], sort=False):
        buckets = list(dict.fromkeys(block["bucket"]))
        counts = block.drop_duplicates("bucket").set_index("bucket")["n_users"]
        metric = block["metric"].iloc[0]
        lines += [
            f"### {dataset}: {metric} by {slice_name.replace('_', ' ')}",
            "",
            "| Model | " + " | ".join(f"{b} (n={counts[b]})" for b in buckets) + " |",
            "|" + "---|" * (len(buckets) + 1),
        ]
        for model, rows in block.groupby("model", sort=False):
            values = rows.set_index("bucket")["mean"]
            lines.append(
                f"| {display_name(model, names)} | "
                + " | ".join(f"{values[b]:.4f}" if b in values else "–" for b in buckets)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)

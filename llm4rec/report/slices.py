"""Where do models differ? Per-user metrics broken down by user history length, by the target
item's popularity (head / torso / tail; see llm4rec.evaluation.evaluate) and by the target item's
training interactions (new: none, cold: at most `cold_items`, warm: more), each bucket with its own
significance test: every model against the best baseline (chosen on validation, as in the main
table) on the bucket's users both scored, corrected over all the slices' comparisons together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from llm4rec.evaluation.evaluate import POPULARITY_BUCKETS
from llm4rec.report.compare import CompareSpec, best_baseline, by_model, paired_sample
from llm4rec.report.runs import RunRecord, refuse_request_rows
from llm4rec.report.tables import display_name
from llm4rec.stats import bootstrap_mean_ci, choose_test, correct, mean_ci, paired_test

SLICES = ("history_length", "target_popularity", "target_interactions")
SLICE_COLUMNS = {
    "history_length": "history_length_bucket",
    "target_popularity": "target_bucket",
    "target_interactions": "target_interactions_bucket",
}
MARKS = {"better": "↑", "worse": "↓"}


def history_buckets(lengths: pd.Series, n_buckets: int = 4) -> tuple[pd.Series, list[str]]:
    """Quantile buckets of history length (dataset-adaptive), labelled by their integer ranges:
    bucket i holds edges[i] <= length < edges[i+1] (the last one includes the maximum)."""
    edges = history_edges(lengths, n_buckets)
    labels = _edge_labels(edges)
    return pd.Series(_apply_edges(lengths, edges, labels), index=lengths.index), labels


def history_edges(lengths: pd.Series, n_buckets: int) -> np.ndarray:
    return np.unique(np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)))


def _edge_labels(edges: np.ndarray) -> list[str]:
    if len(edges) == 1:
        return [f"{int(edges[0])}"]
    labels = []
    for i in range(len(edges) - 1):
        low = int(np.ceil(edges[i]))
        high = (
            int(np.floor(edges[i + 1])) if i == len(edges) - 2 else int(np.ceil(edges[i + 1])) - 1
        )
        labels.append(f"{low}–{high}")
    return labels


def _apply_edges(lengths: pd.Series, edges: np.ndarray, labels: list[str]) -> np.ndarray:
    if len(edges) == 1:
        return np.full(len(lengths), labels[0], dtype=object)
    codes = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    return np.array([labels[c] for c in codes], dtype=object)


def interaction_labels(cold_items: int) -> list[str]:
    return ["new (0)", f"cold (1–{cold_items})", f"warm (>{cold_items})"]


def interaction_buckets(counts: pd.Series, cold_items: int) -> np.ndarray:
    """Each target by its item's training interactions: 'new (0)', 'cold (1–c)', 'warm (>c)'."""
    labels = interaction_labels(cold_items)
    codes = np.where(counts <= 0, 0, np.where(counts <= cold_items, 1, 2))
    return np.array([labels[c] for c in codes], dtype=object)


def _bucketed(
    runs: Sequence[RunRecord], n_history_buckets: int, cold_items: int
) -> tuple[dict[tuple[str, str], list[pd.DataFrame]], dict[str, dict[str, list[str]]]]:
    """Every run's per-user frame with a bucket column per slice, and each dataset's bucket
    labels. History-length edges come from the dataset's run with the most users, so a sampled
    model's users fall in the same buckets as everyone's."""
    frames = {key: [r.per_user() for r in rs] for key, rs in by_model(runs).items()}
    labels: dict[str, dict[str, list[str]]] = {}
    out: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for dataset in sorted({d for d, _ in frames}):
        widest = max((pu for (d, _), pus in frames.items() if d == dataset for pu in pus), key=len)
        edges = history_edges(widest["history_length"], n_history_buckets)
        history_labels = _edge_labels(edges)
        labels[dataset] = {
            "history_length": history_labels,
            "target_popularity": list(POPULARITY_BUCKETS),
            "target_interactions": interaction_labels(cold_items),
        }
        for (d, model), pus in frames.items():
            if d != dataset:
                continue
            out[(d, model)] = [
                pu.assign(
                    history_length_bucket=_apply_edges(pu["history_length"], edges, history_labels),
                    target_interactions_bucket=interaction_buckets(
                        pu["target_popularity"], cold_items
                    ),
                )
                for pu in pus
            ]
    return out, labels


def slice_frame(
    runs: Sequence[RunRecord],
    metric: str,
    n_history_buckets: int,
    cold_items: int = 5,
    spec: CompareSpec | None = None,
) -> pd.DataFrame:
    """Rows: dataset, model, paradigm, slice, bucket, n_users, mean (over seeds of the bucket
    mean), std, a 95% interval: over seeds (t) with two or more, over the bucket's users
    (bootstrap) with one (`ci_over`), and the bucket's test against the best baseline
    (`reference`, `p_value`, `p_adjusted` over every comparison of the frame, `direction`)."""
    spec = spec or CompareSpec()
    refuse_request_rows(runs, "the slices")
    bucketed, labels = _bucketed(runs, n_history_buckets, cold_items)
    groups = by_model(runs)
    rows = []
    for (dataset, model), frames in bucketed.items():
        paired = _paired_with_reference(groups, bucketed, dataset, model, metric)
        for slice_name in SLICES:
            column = SLICE_COLUMNS[slice_name]
            for bucket in labels[dataset][slice_name]:
                means = [pu.loc[pu[column] == bucket, metric].mean() for pu in frames]
                n_users = int((frames[0][column] == bucket).sum())
                if n_users == 0:
                    continue
                if len(means) > 1:
                    _, _, low, high = mean_ci(means)
                else:
                    pu = frames[0]
                    low, high = bootstrap_mean_ci(
                        pu.loc[pu[column] == bucket, metric].to_numpy(), rounds=1000
                    )
                rows.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "paradigm": groups[(dataset, model)][0].paradigm,
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
                    | _bucket_test(paired, column, bucket, spec, metric)
                )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    tested = frame["p_value"].notna()
    frame["p_adjusted"] = np.nan
    frame.loc[tested, "p_adjusted"] = correct(
        frame.loc[tested, "p_value"].to_numpy(dtype=np.float64), spec.correction
    )
    significant = frame["p_adjusted"].astype(float) < spec.alpha
    frame["direction"] = np.where(
        significant, np.where(frame["mean_diff"] > 0, "better", "worse"), ""
    )
    return frame


def _paired_with_reference(groups, bucketed, dataset, model, metric) -> dict:
    """The model's and the best baseline's (chosen on validation) seed-averaged per-user metric on
    the users both scored, with the baseline's per-user frame (its buckets); once per model."""
    reference = best_baseline(groups, dataset, metric)
    if reference is None or reference == model:
        return {"reference": reference or ""}
    sample = paired_sample(groups[(dataset, model)], groups[(dataset, reference)], metric)
    a, b = sample.seed_averaged()
    frame = bucketed[(dataset, reference)][0].set_index("user_id").loc[list(sample.users)]
    return {"reference": reference, "a": a, "b": b, "frame": frame}


def _bucket_test(
    paired: dict, column: str, bucket: str, spec: CompareSpec, metric: str = "ndcg_at_10"
) -> dict:
    """The model against the best baseline on the bucket's users both scored (the report's paired
    test); NaN for the baseline itself, or a bucket with fewer than two such users."""
    none = {"reference": paired["reference"], "n_paired": 0, "mean_diff": np.nan, "p_value": np.nan}
    if "frame" not in paired:
        return none
    mask = paired["frame"][column].to_numpy() == bucket
    if mask.sum() < 2:
        return none
    a, b = paired["a"][mask], paired["b"][mask]
    used = choose_test(metric, a, b, spec.test)  # a small bucket: the randomization test
    return {
        "reference": paired["reference"],
        "n_paired": int(mask.sum()),
        "mean_diff": float((a - b).mean()),
        "test": used,
        "p_value": paired_test(a, b, used, spec.rounds, spec.seed),
    }


def render_slices_markdown(frame: pd.DataFrame, names: Mapping[str, str] | None = None) -> str:
    lines = []
    for (dataset, slice_name), block in frame.groupby(["dataset", "slice"], sort=False):
        buckets = list(dict.fromkeys(block["bucket"]))
        counts = block.groupby("bucket")["n_users"].max()  # a sampled model has fewer
        metric = block["metric"].iloc[0]
        lines += [
            f"### {dataset}: {metric} by {slice_name.replace('_', ' ')}",
            "",
            "| Model | " + " | ".join(f"{b} (n={counts[b]})" for b in buckets) + " |",
            "|" + "---|" * (len(buckets) + 1),
        ]
        for model, rows in block.groupby("model", sort=False):
            values = rows.set_index("bucket")
            cells = [
                f"{values.loc[b, 'mean']:.4f}{MARKS.get(values.loc[b].get('direction', ''), '')}"
                if b in values.index
                else "–"
                for b in buckets
            ]
            lines.append(f"| {display_name(model, names)} | " + " | ".join(cells) + " |")
        lines.append("")
    if "reference" in frame and frame["reference"].astype(bool).any():
        reference = display_name(
            frame.loc[frame["reference"].astype(bool), "reference"].iloc[0], names
        )
        lines += [
            f"↑ / ↓: better / worse than the best baseline ({reference}, chosen on validation) on "
            "the bucket's users both scored (each user's metric averaged over the common seeds; "
            "the report's paired test), corrected over all the slices' comparisons together. "
            "Buckets: history length by quantiles of the dataset's users; target popularity by "
            "thirds of the training interactions; target interactions: new (none in training), "
            "cold (at most `report.cold_items`), warm.",
            "",
        ]
    return "\n".join(lines)

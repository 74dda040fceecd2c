"""Published tables reproduced: each published figure beside the harness's number under the same
protocol (docs/anchors.md).

`benchmarks/anchors/published.csv` holds one published figure a row: which model, the value, the
metric and cutoff, the dataset variant and the protocol it was measured under, its source (paper
and table, repository and path), the run of the anchor grid it is set beside (`run`:
dataset/model) and how well that run matches the source's setup (`match`):

- `exact`: the source's dataset, protocol and settings, copied into benchmarks/anchors.yaml;
- `config`: the same dataset and protocol, a setting the source states differently (named in
  `setup`);
- `dataset`: the source's figure is on another dataset (named in `setup`): set beside ours to show
  the difference, never read as a check;
- `not_run`: no run (the reason in `setup`): listed so a reader sees every published figure.

The report (`anchors.{md,tex,csv}`) gives, per figure, ours (the mean over test users; over seeds,
each user's mean first), our 95% interval over users (a t interval) and, where a run has several
seeds, over the seed means, the difference, and the verdict: `inside` when the published value lies
in our interval (the wider of the two), else `outside` with the sign of ours minus theirs. A second
table gives every run of the grid with its split's tie count (the share of test targets sharing
their timestamp with the history's last item, docs/protocol.md#ties).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.config import Grid
from llm4rec.data.split import PHASES
from llm4rec.io import read_json, write_text
from llm4rec.report.runs import RunRecord, runs_from_folders
from llm4rec.report.tables import latex_escape, table_float
from llm4rec.stats import mean_ci

COLUMNS = (
    "anchor",
    "model",
    "metric",
    "cutoff",
    "value",
    "dataset_variant",
    "protocol",
    "source",
    "location",
    "run",
    "match",
    "setup",
)
METRICS = ("hr", "ndcg", "recall", "mrr")
MATCHES = ("exact", "config", "dataset", "not_run")
LEVEL = 0.95


class AnchorError(ValueError):
    """A published.csv that cannot be read as published figures (names file, row and field)."""


@dataclass(frozen=True)
class Published:
    anchor: str
    model: str
    metric: str  # our column: hr_at_10
    value: float
    dataset_variant: str
    protocol: str
    source: str
    location: str
    run: tuple[str, str] | None  # (dataset, model) of the anchor grid
    match: str
    setup: str


def read_published(path: str | Path) -> list[Published]:
    """Every row of published.csv, checked: each names a source, a location, a protocol and a
    dataset variant; a metric, cutoff and value that are numbers a metric can take; a run
    (dataset/model) unless it was not run."""
    path = Path(path)
    if not path.is_file():
        raise AnchorError(f"{path}: not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AnchorError(
                f"{path}: missing column(s) {', '.join(missing)} (expected: {', '.join(COLUMNS)})"
            )
        rows = list(reader)
    out, seen = [], {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        if None in row:
            raise AnchorError(
                f"{where}: more fields than the header's {len(COLUMNS)} "
                "(quote a value with a comma)"
            )
        row = {key: (value or "") for key, value in row.items()}
        for field in ("anchor", "model", "dataset_variant", "protocol", "source", "location"):
            if not (row[field] or "").strip():
                raise AnchorError(f"{where}: field '{field}' is empty (every figure names it)")
        if row["metric"] not in METRICS:
            raise AnchorError(
                f"{where}: metric '{row['metric']}' is not one of: {', '.join(METRICS)}"
            )
        try:
            cutoff, value = int(row["cutoff"]), float(row["value"])
        except ValueError as err:
            raise AnchorError(f"{where}: cutoff and value must be numbers ({err})") from err
        if cutoff < 1 or not 0 <= value <= 1:
            raise AnchorError(f"{where}: cutoff {cutoff} must be >= 1 and value {value} in [0, 1]")
        if row["match"] not in MATCHES:
            raise AnchorError(
                f"{where}: match '{row['match']}' is not one of: {', '.join(MATCHES)}"
            )
        key = (row["anchor"].strip(), row["metric"], cutoff)
        if key in seen:
            raise AnchorError(
                f"{where}: {key[0]} {row['metric']}@{cutoff} is already published at line "
                f"{seen[key]}"
            )
        seen[key] = line
        run = row["run"].strip()
        if row["match"] == "not_run":
            if run:
                raise AnchorError(f"{where}: match not_run names a run ('{run}')")
            if not row["setup"].strip():
                raise AnchorError(f"{where}: a figure not run says why in 'setup'")
            cell = None
        else:
            if run.count("/") != 1:
                raise AnchorError(f"{where}: run '{run}' must be dataset/model")
            cell = tuple(run.split("/"))
        if row["match"] in ("config", "dataset") and not row["setup"].strip():
            raise AnchorError(f"{where}: match {row['match']} names the difference in 'setup'")
        out.append(
            Published(
                anchor=row["anchor"].strip(),
                model=row["model"].strip(),
                metric=f"{row['metric']}_at_{cutoff}",
                value=value,
                dataset_variant=row["dataset_variant"].strip(),
                protocol=row["protocol"].strip(),
                source=row["source"].strip(),
                location=row["location"].strip(),
                run=cell,  # type: ignore[arg-type]
                match=row["match"],
                setup=row["setup"].strip(),
            )
        )
    return out


def ours(records: Sequence[RunRecord], metric: str, level: float = LEVEL) -> dict:
    """Our figure from a run's seeds: the mean over test users (each user's mean over seeds), the
    t interval over users and, with several seeds, the t interval over the seed means."""
    frames = [r.per_user("test").set_index("user_id")[metric] for r in records]
    users = frames[0].index
    for record, frame in zip(records, frames, strict=True):
        if not frame.index.equals(users):
            raise AnchorError(f"{record.label}: its test users differ from {records[0].label}")
    per_user = np.mean(np.vstack([f.to_numpy() for f in frames]), axis=0)
    mean, _, low, high = mean_ci(per_user, level)
    out = {"ours": mean, "users_low": low, "users_high": high, "n_users": len(users)}
    out["seeds"] = len(records)
    if len(records) > 1:
        _, _, s_low, s_high = mean_ci([f.mean() for f in frames], level)
        out |= {"seeds_low": s_low, "seeds_high": s_high}
    return out


def verdict(published: float, low: float, high: float, mean: float) -> str:
    if low <= published <= high:
        return "inside"
    return f"outside ({'ours higher' if mean > published else 'ours lower'})"


def anchors_frame(grid: Grid, published: Sequence[Published]) -> pd.DataFrame:
    """One row per published figure (module doc)."""
    rows = []
    for figure in published:
        row = {
            "anchor": figure.anchor,
            "model": figure.model,
            "metric": figure.metric,
            "published": figure.value,
            "dataset_variant": figure.dataset_variant,
            "protocol": figure.protocol,
            "source": figure.source,
            "location": figure.location,
            "run": "/".join(figure.run) if figure.run else "",
            "match": figure.match,
            "setup": figure.setup,
        }
        records = []
        if figure.run is not None:
            dataset, model = figure.run
            if (
                dataset not in grid.evaluated_datasets
                or model not in grid.models
                or dataset not in grid.model_datasets(model)
            ):
                raise AnchorError(
                    f"published figure '{figure.anchor}' ({figure.metric}): run {dataset}/{model} "
                    f"is not a cell of grid {grid.path}"
                )
            cutoffs = grid.model_evaluation(model)["cutoffs"]
            if int(figure.metric.rsplit("_", 1)[1]) not in cutoffs:
                raise AnchorError(
                    f"published figure '{figure.anchor}' ({figure.metric}): {model} is evaluated "
                    f"at cutoffs {sorted(cutoffs)} in grid {grid.path} (evaluation.cutoffs)"
                )
            folders = [grid.run_dir(dataset, model, s) for s in grid.model_seeds(model)]
            records = runs_from_folders(folders)
        if records:
            found = ours(records, figure.metric)
            low = min(found["users_low"], found.get("seeds_low", np.inf))
            high = max(found["users_high"], found.get("seeds_high", -np.inf))
            row |= found | {
                "difference": found["ours"] - figure.value,
                "relative": (found["ours"] - figure.value) / figure.value
                if figure.value
                else np.nan,
                "verdict": (
                    "another dataset: not a check"
                    if figure.match == "dataset"
                    else verdict(figure.value, low, high, found["ours"])
                ),
            }
        else:
            row["verdict"] = "not run" if figure.run is None else "run missing"
        rows.append(row)
    return pd.DataFrame(rows)


def runs_frame(grid: Grid) -> pd.DataFrame:
    """Every finished run of the grid: its split's size and tie count, HR@10 and NDCG@10 with
    their intervals over users, the epochs it trained."""
    rows = []
    for dataset in grid.evaluated_datasets:
        stats = read_json(grid.split_dir(dataset) / "split.json").get("stats", {})
        split = grid.dataset_config(dataset).get("split", {})
        rule = split.get("method", "leave_one_out")
        tied = stats.get("test_tied_with_history") if rule == "leave_one_out" else None
        if rule == "leave_one_out":
            rule = f"ties: {split.get('tie_break', 'file_order')}, {split.get('test_ties', 'keep')}"
        for model in grid.models:
            if dataset not in grid.model_datasets(model):
                continue
            folders = [grid.run_dir(dataset, model, s) for s in grid.model_seeds(model)]
            records = runs_from_folders(folders)
            if not records:
                continue
            row = {
                "dataset": dataset,
                "split": rule,
                "users": stats.get("test_users"),
                "targets": stats.get("test_interactions"),
                "items": stats.get("items"),
                "interactions": sum(stats.get(f"{p}_interactions", 0) for p in PHASES),
                "tied": tied,
                "model": model,
            }
            for metric in ("hr_at_10", "ndcg_at_10"):
                found = ours(records, metric)
                row |= {
                    metric: found["ours"],
                    f"{metric}_low": found["users_low"],
                    f"{metric}_high": found["users_high"],
                }
            fit = records[0].run.get("fit", {})
            row["epochs"] = fit.get("epochs")
            row["best_epoch"] = fit.get("best_epoch")
            rows.append(row)
    return pd.DataFrame(rows)


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _interval(row: pd.Series) -> str:
    if pd.isna(row.get("users_low")):
        return "–"
    text = f"[{_num(row['users_low'])}, {_num(row['users_high'])}]"
    if not pd.isna(row.get("seeds_low", np.nan)):
        text += f"; seeds [{_num(row['seeds_low'])}, {_num(row['seeds_high'])}]"
    return text


def _metric_name(metric: str) -> str:
    name, k = metric.split("_at_")
    return f"{ {'hr': 'HR', 'ndcg': 'NDCG', 'recall': 'Recall', 'mrr': 'MRR'}[name] }@{k}"


ANCHOR_HEAD = [
    "Published model",
    "Metric",
    "Published",
    "Ours",
    "95% interval",
    "Diff.",
    "Verdict",
    "Run",
    "Match",
]
MATCH_WORDS = {
    "exact": "exact setup",
    "config": "a setting differs",
    "dataset": "another dataset",
    "not_run": "not run",
}


def _anchor_cells(row: pd.Series) -> list[str]:
    return [
        row["model"],
        _metric_name(row["metric"]),
        _num(row["published"]),
        _num(row.get("ours")),
        _interval(row),
        _num(row.get("difference")),
        row["verdict"],
        row["run"] or "–",
        MATCH_WORDS[row["match"]],
    ]


def _sources(frame: pd.DataFrame) -> list[str]:
    seen, lines = set(), []
    for _, row in frame.iterrows():
        if row["anchor"] in seen:
            continue
        seen.add(row["anchor"])
        lines.append(
            f"{row['model']} ({row['anchor']}): {row['source']}; {row['location']}. "
            f"Dataset: {row['dataset_variant']}. Protocol: {row['protocol']}."
            + (f" {row['setup']}" if row["setup"] else "")
        )
    return lines


RUN_HEAD = [
    "Dataset",
    "Split",
    "Users",
    "Targets",
    "Tied",
    "Model",
    "HR@10 [95%]",
    "NDCG@10 [95%]",
    "Epochs (best)",
]


def _run_cells(row: pd.Series) -> list[str]:
    tied = (
        f"{int(row['tied'])} ({100 * row['tied'] / row['users']:.0f}%)"
        if pd.notna(row["tied"]) and row["users"]
        else "–"
    )
    epochs = (
        f"{int(row['epochs'])} ({int(row['best_epoch'])})"
        if pd.notna(row.get("epochs")) and pd.notna(row.get("best_epoch"))
        else "–"
    )
    return [
        row["dataset"],
        row["split"],
        str(int(row["users"])) if pd.notna(row["users"]) else "–",
        str(int(row["targets"])) if pd.notna(row.get("targets")) else "–",
        tied,
        row["model"],
        f"{_num(row['hr_at_10'])} [{_num(row['hr_at_10_low'])}, {_num(row['hr_at_10_high'])}]",
        f"{_num(row['ndcg_at_10'])} "
        f"[{_num(row['ndcg_at_10_low'])}, {_num(row['ndcg_at_10_high'])}]",
        epochs,
    ]


def render_markdown(anchors: pd.DataFrame, runs: pd.DataFrame) -> str:
    lines = [
        "| " + " | ".join(ANCHOR_HEAD) + " |",
        "|" + "---|" * len(ANCHOR_HEAD),
        *("| " + " | ".join(_anchor_cells(r)) + " |" for _, r in anchors.iterrows()),
        "",
        "Published figures beside ours (mean over test users; 95% t interval over users, and over "
        "seeds where a run has several). Verdict: the published value inside our interval, or "
        "outside with the sign of ours minus published; a figure on another dataset is shown, "
        "never read as a check.",
        "",
        "Sources:",
        "",
        *(f"- {line}" for line in _sources(anchors)),
    ]
    if not runs.empty:
        lines += [
            "",
            "### Every run of the anchor grid",
            "",
            "| " + " | ".join(RUN_HEAD) + " |",
            "|" + "---|" * len(RUN_HEAD),
            *("| " + " | ".join(_run_cells(r)) + " |" for _, r in runs.iterrows()),
            "",
            "Targets: test targets (several per user under a ratio split or a tie group). Tied "
            "(leave-one-out): test targets sharing their timestamp with the history's last item "
            "(docs/protocol.md#ties). Epochs: trained (the best on validation).",
        ]
    return "\n".join(lines) + "\n"


def render_latex(anchors: pd.DataFrame, float_: str = "auto") -> str:
    head = [h for h in ANCHOR_HEAD if h != "Run"]
    body = [
        [c for i, c in enumerate(_anchor_cells(r)) if ANCHOR_HEAD[i] != "Run"]
        for _, r in anchors.iterrows()
    ]
    tabular = [
        r"\begin{tabular}{ll" + "r" * 4 + "ll}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in head) + r" \\",
        r"\midrule",
        *(" & ".join(latex_escape(c) for c in cells) + r" \\" for cells in body),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    caption = latex_escape("Published figures beside ours under the same protocol.")
    notes = [
        latex_escape(
            "Ours: the mean over test users with its 95% t interval over users (over seeds too "
            "where a run has several); verdict: the published value inside our interval, or "
            "outside with the sign of ours minus published. "
            "Sources: benchmarks/anchors/published.csv."
        )
    ]
    return table_float(tabular, caption, "tab:anchors", notes, [r"\small"], float_)


def write_anchors(
    grid: Grid, published_path: str | Path, out_dir: str | Path | None = None
) -> list[Path]:
    """reports/<grid>/anchors.{md,tex,csv} (the anchors) and anchor_runs.csv (every run)."""
    out = Path(out_dir) if out_dir is not None else grid.report_dir("main")
    anchors = anchors_frame(grid, read_published(published_path))
    runs = runs_frame(grid)
    float_ = grid.report_options().get("latex_float", "auto")
    return [
        write_text(out / "anchors.md", render_markdown(anchors, runs)),
        write_text(out / "anchors.tex", render_latex(anchors, float_)),
        write_text(out / "anchors.csv", anchors.to_csv(index=False)),
        write_text(out / "anchor_runs.csv", runs.to_csv(index=False)),
    ]

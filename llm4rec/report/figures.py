"""Figures (matplotlib, PDF and PNG): metric per model with CIs, accuracy vs cost, slice bars.

Every row of the CI figure has an interval, labelled by what it is over: seeds (t-interval of the
per-seed means) where a model has two or more, users (percentile bootstrap) where it has one.

Every label stays inside the saved figure and none overlaps another: models are told apart by a
legend (colour = paradigm, marker = model within it), not by text next to the points
(tests/test_report.py checks the drawn boxes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from llm4rec.io import write_with  # noqa: E402
from llm4rec.models import paradigm_color, paradigm_rank, paradigm_title  # noqa: E402
from llm4rec.report.compare import by_model  # noqa: E402
from llm4rec.report.runs import RunRecord  # noqa: E402
from llm4rec.report.tables import display_name, metric_label  # noqa: E402
from llm4rec.stats import bootstrap_mean_ci, mean_ci  # noqa: E402


def ci_stem(metric: str) -> str:
    return f"{metric}_ci"


def cost_stem(metric: str) -> str:
    return f"{metric}_vs_cost"


def slice_stem(slice_name: str) -> str:
    return f"slices_{slice_name}"


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("pdf", "png"):
        path = out_dir / f"{stem}.{ext}"
        write_with(
            path, lambda p, ext=ext: fig.savefig(p, format=ext, dpi=150, bbox_inches="tight")
        )
        paths.append(path)
    plt.close(fig)
    return paths


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def row_interval(
    runs: Sequence[RunRecord], metric: str, rounds: int = 2000, seed: int = 0
) -> tuple[float, float, float, str]:
    """(mean, CI low, CI high, over) for one model: a t-interval over seed means with two or more
    seeds (over = "seeds"), a percentile bootstrap over users with one (over = "users"): every row
    has one."""
    if len(runs) > 1:
        mean, _, low, high = mean_ci([r.metrics["test"][metric] for r in runs])
        return mean, low, high, "seeds"
    values = runs[0].per_user()[metric].to_numpy(dtype=np.float64)
    low, high = bootstrap_mean_ci(values, rounds, seed)
    return float(values.mean()), low, high, "users"


INTERVAL_STYLE = {
    "seeds": {"ecolor": "black", "label": "95% CI over seeds (t)"},
    "users": {
        "ecolor": "dimgray",
        "linestyle": "--",
        "label": "95% CI over users (bootstrap; one seed)",
    },
}


def metric_with_ci(
    runs: Sequence[RunRecord], metric: str, out_dir: Path, names: Mapping[str, str] | None = None
) -> list[Path]:
    groups = by_model(runs)
    datasets = sorted({d for d, _ in groups})
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(4.5 * len(datasets), 0.45 * max(len(groups), 4) + 1.4),
        squeeze=False,
    )
    kinds = set()
    for ax, dataset in zip(axes[0], datasets, strict=True):
        entries = sorted(
            (
                (rs[0].paradigm, m, row_interval(rs, metric))
                for (d, m), rs in groups.items()
                if d == dataset
            ),
            key=lambda e: (paradigm_rank(e[0]), e[2][0]),
        )
        y = np.arange(len(entries))
        ax.barh(y, [e[2][0] for e in entries], color=[paradigm_color(e[0]) for e in entries])
        for i, (_, _, (mean, low, high, over)) in enumerate(entries):
            style = INTERVAL_STYLE[over]
            bars = ax.errorbar(
                mean,
                i,
                xerr=[[mean - low], [high - mean]],
                fmt="none",
                capsize=3,
                ecolor=style["ecolor"],
            )
            if "linestyle" in style:
                bars[-1][0].set_linestyle(style["linestyle"])
            kinds.add(over)
        ax.set_yticks(y, [display_name(e[1], names) for e in entries])
        ax.set_xlabel(f"{metric_label(metric)} (mean, 95% CI)")
        ax.set_title(dataset)
    handles = [
        matplotlib.lines.Line2D(
            [],
            [],
            color=INTERVAL_STYLE[k]["ecolor"],
            linestyle=INTERVAL_STYLE[k].get("linestyle", "-"),
        )
        for k in ("seeds", "users")
        if k in kinds
    ]
    fig.legend(
        handles,
        [INTERVAL_STYLE[k]["label"] for k in ("seeds", "users") if k in kinds],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    return save(fig, out_dir, ci_stem(metric))


def accuracy_vs_cost(
    runs: Sequence[RunRecord], metric: str, out_dir: Path, names: Mapping[str, str] | None = None
) -> list[Path]:
    """The metric against train time and inference time per user (log scales), one point per
    model and dataset; a legend below the axes names every point (paradigm colour, a marker per
    model within its paradigm)."""
    groups = by_model(runs)
    several = len({d for d, _ in groups}) > 1
    order = sorted(
        groups,
        key=lambda dm: (
            paradigm_rank(groups[dm][0].paradigm),
            groups[dm][0].paradigm,
            dm[1],
            dm[0],
        ),
    )
    within: dict[str, list[str]] = {}
    for dataset, model in order:
        models = within.setdefault(groups[(dataset, model)][0].paradigm, [])
        if model not in models:
            models.append(model)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"wspace": 0.3})
    handles = []
    for dataset, model in order:
        rs = groups[(dataset, model)]
        paradigm = rs[0].paradigm
        style = {
            "color": paradigm_color(paradigm),
            "marker": MARKERS[within[paradigm].index(model) % len(MARKERS)],
            "s": 46,
            "edgecolors": "black",
            "linewidths": 0.4,
        }
        if several:
            style["facecolors"] = (
                "none" if sorted({d for d, _ in groups}).index(dataset) % 2 else style["color"]
            )
        acc = np.mean([r.metrics["test"][metric] for r in rs])
        for ax, key in zip(axes, ("train_time_s", "inference_ms_per_user"), strict=True):
            cost = max(np.mean([r.metrics["cost"][key] for r in rs]), 1e-3)
            point = ax.scatter(cost, acc, **style)
        label = display_name(model, names) + (f" ({dataset})" if several else "")
        handles.append((point, f"{label} [{paradigm_title(paradigm)}]"))
    for ax, label in zip(axes, ("train time (s)", "inference time per user (ms)"), strict=True):
        ax.set_xscale("log")
        ax.margins(x=0.1, y=0.08)
        ax.set_xlabel(label)
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    columns = 3 if len(handles) > 8 else 2
    fig.legend(
        [h for h, _ in handles],
        [t for _, t in handles],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=columns,
        fontsize=8,
        frameon=False,
        handletextpad=0.3,
        columnspacing=1.5,
    )
    return save(fig, out_dir, cost_stem(metric))


def slice_bars(
    slices: pd.DataFrame, out_dir: Path, names: Mapping[str, str] | None = None
) -> list[Path]:
    paths = []
    for slice_name, block in slices.groupby("slice", sort=False):
        datasets = list(dict.fromkeys(block["dataset"]))
        fig, axes = plt.subplots(
            1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False
        )
        for ax, dataset in zip(axes[0], datasets, strict=True):
            part = block[block["dataset"] == dataset]
            buckets = list(dict.fromkeys(part["bucket"]))
            models = list(dict.fromkeys(part["model"]))
            width = 0.8 / max(len(models), 1)
            colors = plt.get_cmap("tab20" if len(models) > 10 else "tab10")
            for i, model in enumerate(models):
                values = part[part["model"] == model].set_index("bucket").reindex(buckets)
                errors = [values["mean"] - values["ci_low"], values["ci_high"] - values["mean"]]
                ax.bar(
                    np.arange(len(buckets)) + i * width,
                    values["mean"],
                    width,
                    yerr=errors,
                    capsize=2,
                    label=display_name(model, names),
                    color=colors(i % colors.N),
                )
            ax.set_xticks(np.arange(len(buckets)) + width * (len(models) - 1) / 2, buckets)
            ax.set_xlabel(slice_name.replace("_", " "))
            ax.set_ylabel(f"{metric_label(part['metric'].iloc[0])} (95% CI)")
            ax.set_title(dataset)
            ax.text(
                0.0,
                -0.22,
                "intervals over seeds (t); over the bucket's users (bootstrap) for one-seed models",
                transform=ax.transAxes,
                fontsize=7,
                va="top",
            )
        # beside the bars
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        paths += save(fig, out_dir, slice_stem(slice_name))
    return paths


LEARNING_CURVES = "learning_curves"


def configured_budget(run: RunRecord) -> float | None:
    """The budget its config gave, in the units its validation curve counts (optimiser steps of an
    LLM or RL row, epochs of the others): what the cost model's training FLOPs are the FLOPs of."""
    params = run.run.get("run", {}).get("params", {})
    for value in (
        (params.get("sft") or {}).get("steps"),
        params.get("steps"),
        params.get("epochs"),
    ):
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return None


def curve_points(run: RunRecord, metric: str) -> list[tuple[float, float, float]]:
    """(share of the training it ran, share of its configured budget, validation score) at each
    validation of its training (fit's `valid_curve`: LLM steps, RecBole evaluations, AlphaRec and
    RTA epochs); an early-stopped run ends short of its budget."""
    points = []
    for point in run.run.get("fit", {}).get("valid_curve") or []:
        if metric not in point:
            continue
        where = point.get("step", point.get("epoch", point.get("evaluation")))
        points.append((float(where), float(point[metric])))
    if len(points) < 2:
        return []
    last = max(w for w, _ in points) or 1.0
    budget = max(configured_budget(run) or last, last)
    return [(w / last, w / budget, v) for w, v in points]


def learning_curves(
    runs: Sequence[RunRecord],
    metric: str,
    out_dir: Path,
    names: Mapping[str, str] | None = None,
    train_flops: Mapping[tuple[str, str], float] | None = None,
) -> list[Path]:
    """Validation `metric` against training compute for every trained row, one row of panels per
    dataset: against wall-clock seconds (the run's train time, spread over its validations in
    proportion to the steps or epochs done) and against training FLOPs (the cost model's estimate
    for the run's configured budget, `llm4rec plan`, at each validation's share of that budget).
    A curve still rising at its right end is a row the budget cut off; rows still improving at the
    end of their budget (llm4rec.evaluation.convergence) are drawn solid, the rest dashed."""
    groups = by_model(runs)
    datasets = sorted({d for d, _ in groups})
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(11, 3.8 * len(datasets)), squeeze=False,
        gridspec_kw={"wspace": 0.3},
    )  # fmt: skip
    handles: dict[str, object] = {}
    for row, dataset in enumerate(datasets):
        models = sorted(
            (m for d, m in groups if d == dataset),
            key=lambda m: (paradigm_rank(groups[(dataset, m)][0].paradigm), m),
        )
        for index, model in enumerate(models):
            rs = groups[(dataset, model)]
            curves = [(r, curve_points(r, metric)) for r in rs]
            curves = [(r, c) for r, c in curves if c]
            if not curves:
                continue
            run, points = curves[0]  # the first seed's curve (seeds draw the same shape)
            share = np.array([w for w, _, _ in points])  # of the time it trained
            of_budget = np.array([b for _, b, _ in points])  # of the FLOPs its config budgets
            scores = [v for _, _, v in points]
            improving = any(r.convergence == "still improving" for r in rs)  # as the tables
            style = {
                "color": paradigm_color(run.paradigm),
                "marker": MARKERS[index % len(MARKERS)],
                "markersize": 4,
                "linestyle": "-" if improving else "--",
                "linewidth": 1.2,
            }
            seconds = share * max(run.metrics["cost"]["train_time_s"], 1e-3)
            (line,) = axes[row][0].plot(seconds, scores, **style)
            flops = (train_flops or {}).get((dataset, model))
            if flops:
                axes[row][1].plot(of_budget * flops, scores, **style)
            label = display_name(model, names) + (" (still improving)" if improving else "")
            handles.setdefault(label, line)
        for ax, title in zip(
            axes[row], ("training time (s)", "training FLOPs (cost model)"), strict=True
        ):
            ax.set_xscale("log")
            ax.set_xlabel(title + (f", {dataset}" if len(datasets) > 1 else ""))
            ax.set_ylabel(f"validation {metric_label(metric)}")
            ax.grid(alpha=0.3)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=3 if len(handles) > 8 else 2,
        fontsize=8,
        frameon=False,
    )
    return save(fig, out_dir, LEARNING_CURVES)

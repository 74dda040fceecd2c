"""The ablation table: each row against what it is compared with: a registry variant against its
declared parent (`ModelSpec.parent`), and a row against the references its registry entry declares
(`ModelSpec.references`: RTA's gate against the SASRec run it gates with, the zero-shot AlphaRec
row against its untrained floor and MostPop, ...). Rows that ranked with a request are not here:
the steer table compares them.

Its own family of comparisons (`family == "ablation"` in comparisons.csv), corrected apart from the
main table's: the question is what one change to a model buys, not how the model fares against the
best baseline. Each cell is the row's mean on the users and seeds it shares with the reference, the
reference's value on the same sample beside it in parentheses: the two numbers the test compared.
Δ is the relative change of every metric, in column order, so a row can never read as a gain
while most of its metrics fell. What training chose on validation and the tables must say (fit's
`notes`: RTA's gate weight, flagged when it chose one of its parts) is printed beside the row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from llm4rec.report.compare import LOWER_IS_BETTER, CompareSpec, family
from llm4rec.report.tables import (
    CORRECTION_NAMES,
    DIRECTION_MARKS,
    MARKDOWN,
    SEED_MARK,
    Style,
    display_name,
    latex_escape,
    metric_label,
    table_float,
)

COLUMNS = [
    "dataset",
    "row",
    "reference",
    "relation",
    "metric",
    "row_mean",
    "reference_mean",
    "diff",
    "relative_pct",
    "ci_low",
    "ci_high",
    "cohens_d",
    "p_value",
    "p_adjusted",
    "significant",
    "direction",
    "p_seed",
    "p_seed_adjusted",
    "significant_seed",
    "n_users",
    "seeds",
    "n_seeds",
    "test",
    "mde",
]


def relative_change(diff: float, reference: float) -> float:
    """100 x diff / |reference|; NaN where the reference is 0 (a change from nothing has no
    relative size: printed as a dash, never "+nan%")."""
    return 100 * diff / abs(reference) if reference else float("nan")


def ablation_frame(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, row, reference, metric) of the ablation family, with the relation
    (`parent`, or `declared`: a reference of the registry entry) and the direction of a
    significant change."""
    from llm4rec.models import MODELS

    rows = []
    for c in family(comparisons, "ablation").itertuples():
        better = (c.diff > 0) != (c.metric in LOWER_IS_BETTER)
        is_parent = c.system in MODELS and MODELS[c.system].parent == c.reference
        rows.append(
            {
                "dataset": c.dataset,
                "row": c.system,
                "reference": c.reference,
                "relation": "parent" if is_parent else "declared",
                "metric": c.metric,
                "row_mean": c.mean_system,
                "reference_mean": c.mean_reference,
                "diff": c.diff,
                "relative_pct": relative_change(c.diff, c.mean_reference),
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "cohens_d": c.cohens_d,
                "p_value": c.p_value,
                "p_adjusted": c.p_adjusted,
                "significant": bool(c.significant),
                "direction": ("better" if better else "worse") if c.significant else "",
                "p_seed": c.p_seed,
                "p_seed_adjusted": c.p_seed_adjusted,
                "significant_seed": bool(c.significant_seed),
                "n_users": c.n_users,
                "seeds": c.seeds,
                "n_seeds": c.n_seeds,
                "test": getattr(c, "test", ""),
                "mde": getattr(c, "mde", float("nan")),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


ABLATION_CAPTION = (
    "Ablations: each variant against its parent, and each row against the references its claim "
    "names (Against), on the test users and seeds both ran."
)


def ablation_caption(frame: pd.DataFrame, spec: CompareSpec) -> str:
    """The table's caption (one sentence; its notes: `ablation_notes`)."""
    if frame.empty:
        return "No ablation: no variant ran beside its parent or a declared reference."
    return ABLATION_CAPTION


def ablation_notes(frame: pd.DataFrame, spec: CompareSpec) -> str:
    """The marks, tests, family, seeds, Δ and power behind the ablation table."""
    from llm4rec.report.tables import power_sentence, seed_sentence, tests_used

    if frame.empty:
        return ""
    correction = CORRECTION_NAMES.get(spec.correction, spec.correction)
    comparisons = frame.rename(columns={"row": "system"})
    parts = [
        "Each cell is the row's mean, the reference's on the same users and seeds in parentheses: "
        "the two numbers the test compared.",
        "↑ / ↓: significantly better / worse than the reference over users, each user's metric "
        f"averaged over the common seeds ({tests_used(comparisons) or spec.test}; {correction} "
        f"correction over the {len(frame)} comparisons of this table, its own family, "
        f"α = {spec.alpha}).",
        seed_sentence(comparisons, correction),
    ]
    shown = [m for m in spec.metrics if (frame["metric"] == m).any()]
    parts.append(
        "Δ: the relative change from the reference of "
        + ", ".join(metric_label(m) for m in shown)
        + ", in that order (– where the reference is 0)."
    )
    power = power_sentence(comparisons)
    if power:
        parts.append(power)
    return " ".join(parts)


def _cell(row, decimals: int, latex: bool) -> str:
    mark = ""
    if row.direction:
        arrow, command = DIRECTION_MARKS[row.direction]
        seed = (SEED_MARK[1] if latex else SEED_MARK[0]) if row.significant_seed else ""
        mark = rf"$^{{\{command}{seed}}}$" if latex else arrow + seed
    reference = f"({row.reference_mean:.{decimals}f})"
    if latex:  # the reference's value under the row's: a column half as wide
        return _stack(f"{row.row_mean:.{decimals}f}{mark}", rf"{{\scriptsize {reference}}}")
    return f"{row.row_mean:.{decimals}f}{mark} {reference}"


def _stack(*lines: str) -> str:
    """LaTeX: lines stacked in one cell."""
    return r"\begin{tabular}[t]{@{}c@{}}" + r" \\ ".join(lines) + r"\end{tabular}"


def _delta(values: Sequence[float], latex: bool) -> str:
    """The per-metric relative changes, '/'-separated ('–' for an undefined one)."""
    dash = "--" if latex else "–"
    if all(np.isnan(v) for v in values):
        return dash
    parts = [dash if np.isnan(v) else f"{v:+.1f}" for v in values]
    if not latex:
        return "/".join(parts) + "%"
    parts = [p if p == dash else p.replace("-", "$-$") for p in parts]
    # two changes a line (a narrow column), the unit once
    lines = ["/".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    return _stack(*lines[:-1], lines[-1] + r"\%")


def _daggers(i: int, latex: bool) -> str:
    return ("$^{" + r"\dagger" * (i + 1) + "}$") if latex else "†" * (i + 1)


def render_ablations(
    frame: pd.DataFrame,
    spec: CompareSpec,
    style: Style = MARKDOWN,
    decimals: int = 4,
    notes: Mapping[str, Sequence[str]] | None = None,
    improving: set[str] | frozenset[str] = frozenset(),
) -> str:
    """The ablation table as Markdown or LaTeX (booktabs): Row, Against, Seeds, then per dataset
    each metric and Δ (every metric's relative change); `notes` (model -> what its training
    chose) under the table, the row marked with daggers."""
    fmt, names, float_ = style.fmt, style.names, style.float_
    label = style.label or "tab:ablations"
    caption = ablation_caption(frame, spec)
    if frame.empty:
        return caption + "\n" if fmt == "markdown" else f"% {caption}\n"
    latex = fmt == "latex"
    dash = "--" if latex else "–"
    datasets = sorted(frame["dataset"].unique())
    cols = [
        (d, m)
        for d in datasets
        for m in spec.metrics
        if ((frame["dataset"] == d) & (frame["metric"] == m)).any()
    ]
    rows = list(
        dict.fromkeys(
            zip(frame["row"], frame["reference"], frame["seeds"].astype(str), strict=True)
        )
    )
    index = frame.set_index(["dataset", "row", "reference", "metric"])
    notes = {m: list(n) for m, n in (notes or {}).items() if n}
    noted = [m for m in dict.fromkeys(r for r, _, _ in rows) if m in notes]

    def cells(row: str, reference: str) -> list[str]:
        out = []
        for dataset in datasets:
            changes = []
            for metric in (m for d, m in cols if d == dataset):
                key = (dataset, row, reference, metric)
                if key not in index.index:
                    out.append(dash)
                    continue
                found = index.loc[key]
                out.append(_cell(found, decimals, latex))
                changes.append(float(found.relative_pct))
            out.append(_delta(changes, latex) if changes else dash)
        return out

    def name(model: str) -> str:
        text = display_name(model, names) + ("°" if model in improving else "")
        text = latex_escape(text) if latex else text
        return text + (_daggers(noted.index(model), latex) if model in noted else "")

    def reference_name(model: str) -> str:
        text = display_name(model, names)
        return latex_escape(text) if latex else text

    body = [
        [name(row), reference_name(reference), str(len(seeds.split()))] + cells(row, reference)
        for row, reference, seeds in rows
    ]
    marked = sorted(m for m, _, _ in rows if m in improving)
    footer = [
        (latex_escape if latex else str)(
            "°: still improving at the end of its budget (its validation curve): the budget may "
            "decide its number."
        )
    ] * bool(marked) + [
        _daggers(i, latex)
        + " "
        + (latex_escape if latex else str)(f"{display_name(m, names)}: {'; '.join(notes[m])}.")
        for i, m in enumerate(noted)
    ]
    if not latex:
        head = ["Row", "Against", "Seeds"]
        for dataset in datasets:
            head += [f"{dataset} {metric_label(m)}" for d, m in cols if d == dataset]
            head.append(f"{dataset} Δ")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells_) + " |" for cells_ in body]
        text = f"{caption} {ablation_notes(frame, spec)}".strip()
        return "\n".join([*lines, "", text, *footer]) + "\n"
    # names wrap in narrow columns; cells stack the reference under the row's value
    lines = [
        r"\begin{tabular}{>{\raggedright\arraybackslash}p{2.4cm}>{\raggedright\arraybackslash}p{1.9cm}c"
        + "c" * (len(cols) + len(datasets))
        + "}",
        r"\toprule",
    ]
    header, rules, start = ["Row", "Against", ""], [], 4
    sub = ["", "", "Seeds"]
    for dataset in datasets:
        width = sum(1 for d, _ in cols if d == dataset) + 1
        header.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(dataset)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
        sub += [metric_label(m) for d, m in cols if d == dataset] + [r"$\Delta$"]
    lines += [" & ".join(header) + r" \\", " ".join(rules), " & ".join(sub) + r" \\", r"\midrule"]
    lines += [" & ".join(cells_) + r" \\" for cells_ in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return table_float(
        lines,
        latex_escape(caption),
        label,
        footer,
        [r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"],
        float_,
    )

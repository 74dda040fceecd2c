"""The ablation table: every registry variant against its declared parent (`ModelSpec.parent`).

Its own family of comparisons (`family == "ablation"` in comparisons.csv), corrected apart from the
main table's: the question is what one change to a model buys, not how the model fares against the
best baseline. Each cell is the variant's mean on the users and seeds it shares with its parent,
the parent's value on the same sample beside it in parentheses: the two numbers the test compared.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from llm4rec.report.compare import LOWER_IS_BETTER, CompareSpec, family
from llm4rec.report.tables import (
    CORRECTION_NAMES,
    DIRECTION_MARKS,
    SEED_MARK,
    TEST_NAMES,
    display_name,
    latex_escape,
    metric_label,
    table_float,
)

COLUMNS = [
    "dataset",
    "variant",
    "parent",
    "metric",
    "variant_mean",
    "parent_mean",
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
]


def ablation_frame(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, variant, metric) of the ablation family, with the direction of a
    significant change."""
    rows = []
    for c in family(comparisons, "ablation").itertuples():
        better = (c.diff > 0) != (c.metric in LOWER_IS_BETTER)
        rows.append(
            {
                "dataset": c.dataset,
                "variant": c.system,
                "parent": c.reference,
                "metric": c.metric,
                "variant_mean": c.mean_system,
                "parent_mean": c.mean_reference,
                "diff": c.diff,
                "relative_pct": 100 * c.diff / abs(c.mean_reference)
                if c.mean_reference
                else float("nan"),
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
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def ablation_caption(frame: pd.DataFrame, spec: CompareSpec) -> str:
    if frame.empty:
        return "No ablation: no variant ran beside its parent."
    test = TEST_NAMES.get(spec.test, spec.test)
    correction = CORRECTION_NAMES.get(spec.correction, spec.correction)
    parts = [
        "Ablations: each variant against its parent (the model it changes one thing of), on the "
        "test users and seeds both ran; each cell is the variant's mean, the parent's on the same "
        "users and seeds in parentheses.",
        f"↑ / ↓: the variant is significantly better / worse than its parent ({test} over users, "
        f"each user's metric averaged over the common seeds; {correction} correction over the "
        f"{len(frame)} comparisons of this table, its own family, α = {spec.alpha}).",
    ]
    seeded = int(frame["p_seed"].notna().sum())
    if seeded:
        parts.append(
            "‡: also significant by a paired t-test over per-seed means "
            f"({correction} over the {seeded} comparisons with two or more common seeds)."
        )
    parts.append(f"Δ: relative {metric_label(spec.metrics[0])} change from the parent.")
    return " ".join(parts)


def _cell(row, decimals: int, latex: bool) -> str:
    mark = ""
    if row.direction:
        arrow, command = DIRECTION_MARKS[row.direction]
        seed = (SEED_MARK[1] if latex else SEED_MARK[0]) if row.significant_seed else ""
        mark = rf"$^{{\{command}{seed}}}$" if latex else arrow + seed
    parent = f"({row.parent_mean:.{decimals}f})"
    return (
        f"{row.variant_mean:.{decimals}f}{mark} {{\\scriptsize {parent}}}"
        if latex
        else f"{row.variant_mean:.{decimals}f}{mark} {parent}"
    )


def _grid(
    frame: pd.DataFrame, spec: CompareSpec
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str, str]]]:
    datasets = sorted(frame["dataset"].unique())
    cols = [
        (d, m)
        for d in datasets
        for m in spec.metrics
        if ((frame["dataset"] == d) & (frame["metric"] == m)).any()
    ]
    cols = [c for d in datasets for c in [*(x for x in cols if x[0] == d), (d, None)]]
    rows = list(
        dict.fromkeys(
            zip(frame["variant"], frame["parent"], frame["seeds"].astype(str), strict=True)
        )
    )
    return cols, rows


def render_ablations(
    frame: pd.DataFrame,
    spec: CompareSpec,
    fmt: str,
    label: str = "tab:ablations",
    names: Mapping[str, str] | None = None,
    decimals: int = 4,
) -> str:
    """The ablation table as Markdown or LaTeX (booktabs): Variant, Parent, Seeds, then per
    dataset each metric and Δ."""
    caption = ablation_caption(frame, spec)
    if frame.empty:
        return caption + "\n" if fmt == "markdown" else f"% {caption}\n"
    cols, rows = _grid(frame, spec)
    primary = spec.metrics[0]
    index = frame.set_index(["dataset", "variant", "metric"])

    def cells(variant: str, latex: bool) -> list[str]:
        out = []
        for dataset, metric in cols:
            key = (dataset, variant, metric or primary)
            if key not in index.index:
                out.append("--" if latex else "–")
                continue
            row = index.loc[key]
            if metric is None:
                text = f"{row.relative_pct:+.1f}%"
                out.append(latex_escape(text).replace("-", "$-$") if latex else text)
            else:
                out.append(_cell(row, decimals, latex))
        return out

    seeds_of = {v: str(len(s.split())) for v, _, s in rows}
    if fmt == "markdown":
        head = ["Variant", "Parent", "Seeds"] + [
            f"{d} {metric_label(m) if m else 'Δ'}" for d, m in cols
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant, parent, _ in rows:
            lines.append(
                "| "
                + " | ".join(
                    [display_name(variant, names), display_name(parent, names), seeds_of[variant]]
                    + cells(variant, False)
                )
                + " |"
            )
        return "\n".join(lines) + "\n\n" + caption + "\n"
    datasets = list(dict.fromkeys(d for d, _ in cols))
    lines = [r"\begin{tabular}{llc" + "c" * len(cols) + "}", r"\toprule"]
    header, rules, start = ["Variant", "Parent", ""], [], 4
    for dataset in datasets:
        width = sum(1 for d, _ in cols if d == dataset)
        header.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(dataset)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    lines += [
        " & ".join(header) + r" \\",
        " ".join(rules),
        " & ".join(["", "", "Seeds"] + [metric_label(m) if m else r"$\Delta$" for _, m in cols])
        + r" \\",
        r"\midrule",
    ]
    for variant, parent, _ in rows:
        lines.append(
            " & ".join(
                [
                    latex_escape(display_name(variant, names)),
                    latex_escape(display_name(parent, names)),
                    seeds_of[variant],
                ]
                + cells(variant, True)
            )
            + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return table_float(
        lines, latex_escape(caption), label, [], [r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"]
    )

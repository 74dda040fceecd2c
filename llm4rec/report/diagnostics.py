"""The rows no ranked table holds, each in the table it exists for.

- **Beam against exact** (`beam_vs_exact.*`): an exact-ranking row (`*_exact`:
  llm4rec.paradigms.exact) ranks its parent's selected weights by the exact full-catalogue
  likelihood, on a user sample drawn within its parent's. What it is for is the agreement of the
  parent's beam with that exact ranking, not a place in an accuracy table: per row, the users, the
  beam's overlap@K with the exact top-K and the share of users whose beam misses an exact top-K item
  (its run's cost figures), and each metric both ways on the same users with their test (the
  `beam_vs_exact` family of comparisons, corrected on its own).
- **Diagnostics** (`diagnostics.*`): every comparison of a row scored on fewer than
  `report.min_users` test users. Such a row is never ranked (no bold, no mark in an accuracy
  table: on 10 users a hit rate moves in steps of 0.1); its comparisons are listed here with their
  own correction and the difference each could have detected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from llm4rec.report.compare import CompareSpec, by_model, family
from llm4rec.report.runs import RunRecord
from llm4rec.report.tables import (
    CORRECTION_NAMES,
    DIRECTION_MARKS,
    MARKDOWN,
    Style,
    display_name,
    latex_escape,
    metric_label,
    table_float,
    tests_used,
)

AGREEMENT = (("beam_overlap_at_k", "overlap@K"), ("beam_miss_pct", "misses (%)"))
# LaTeX: a cell of two lines (escaped apart from the markup: `_render` escapes the rest)
STACK = "\x00{}\x01{}\x02"


def beam_vs_exact_frame(runs: Sequence[RunRecord], comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, exact row, metric): the exact ranking's mean, the parent's beam on
    the same users, the test and its verdict, and the row's agreement figures."""
    groups = by_model(runs)
    rows = []
    for c in family(comparisons, "beam_vs_exact").itertuples():
        costs = [r.metrics.get("cost", {}) for r in groups.get((c.dataset, c.system), [])]
        agreement = {
            key: float(np.mean([cost[key] for cost in costs if key in cost]))
            if any(key in cost for cost in costs)
            else np.nan
            for key, _ in AGREEMENT
        }
        rows.append(
            {
                "dataset": c.dataset,
                "row": c.system,
                "parent": c.reference,
                "metric": c.metric,
                "exact": c.mean_system,
                "beam": c.mean_reference,
                "n_users": c.n_users,
                "test": c.test,
                "p_value": c.p_value,
                "p_adjusted": c.p_adjusted,
                "direction": ("better" if c.diff > 0 else "worse") if c.significant else "",
                "mde": c.mde,
                **agreement,
            }
        )
    return pd.DataFrame(rows)


def diagnostics_frame(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons of rows under the minimum sample (the `diagnostic` family)."""
    columns = ["dataset", "system", "reference", "metric", "mean_system", "mean_reference"]
    columns += ["n_users", "seeds", "test", "p_value", "p_adjusted", "significant", "mde"]
    found = family(comparisons, "diagnostic")
    return found[[c for c in columns if c in found]].reset_index(drop=True)


def _format(value, decimals: int = 4) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and np.isnan(value))
        else (f"{value:.{decimals}f}")
    )


def _cell_tex(text: str) -> str:
    """A cell in LaTeX: escaped, a STACK cell as two lines (the second smaller)."""
    if "\x00" not in text:
        return latex_escape(text)
    first, second = text.strip("\x00\x02").split("\x01")
    return (
        r"\begin{tabular}[t]{@{}c@{}}"
        + latex_escape(first)
        + r" \\ {\scriptsize "
        + latex_escape(second)
        + r"}\end{tabular}"
    )


def _render(
    head: list[str], body: list[list[str]], caption: str, notes: str, style: Style, label: str
) -> str:
    """The table in `style`; `label`: the table's own, where the style gives none."""
    if style.fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + f"{caption} {notes}".strip() + "\n"
    tabular = [
        r"\begin{tabular}{ll" + "r" * (len(head) - 2) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in head) + r" \\",
        r"\midrule",
        *(" & ".join(_cell_tex(c) for c in cells) + r" \\" for cells in body),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    tabular = [line.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$") for line in tabular]
    label = style.label or label
    return table_float(tabular, latex_escape(caption), label, [], [r"\small"], style.float_)


def render_beam_vs_exact(frame: pd.DataFrame, spec: CompareSpec, style: Style = MARKDOWN) -> str:
    """Row, users, overlap@K, beam misses, then per metric "exact / beam" with the test's mark."""
    fmt, names = style.fmt, style.names
    if frame.empty:
        text = "No exact-ranking row ran: no beam to set against the exact ranking."
        return text + "\n" if fmt == "markdown" else f"% {text}\n"
    metrics = [m for m in spec.metrics if (frame["metric"] == m).any()]
    latex = fmt == "latex"
    head = ["Model", "n", *(title for _, title in AGREEMENT), *(metric_label(m) for m in metrics)]
    body = []
    for _, block in frame.groupby(["dataset", "row"], sort=False):
        first = block.iloc[0]
        cells = [display_name(first["parent"], names), str(int(first["n_users"]))]
        cells += [
            _format(first[key], 3 if key == "beam_overlap_at_k" else 1) for key, _ in AGREEMENT
        ]
        by_metric = block.set_index("metric")
        for metric in metrics:
            if metric not in by_metric.index:
                cells.append("–")
                continue
            found = by_metric.loc[metric]
            mark = DIRECTION_MARKS[found["direction"]][0] if found["direction"] else ""
            exact, beam = f"{_format(found['exact'])}{mark}", f"({_format(found['beam'])})"
            cells.append(STACK.format(exact, beam) if latex else f"{exact} {beam}")
        body.append(cells)
    correction = CORRECTION_NAMES.get(spec.correction, spec.correction)
    caption = (
        "Beam against exact: each generative row's beam and the exact full-catalogue ranking of "
        "the same weights, on the same users."
    )
    notes = (
        "Each metric: the exact ranking's value, the beam's on the same users in parentheses. "
        "overlap@K: |beam top-K ∩ exact top-K| / K, mean over users; beam misses: users whose beam "
        "top-K misses an item of the exact top-K. ↑ / ↓: the exact ranking significantly better / "
        f"worse than the beam ({tests_used(frame.rename(columns={'row': 'system'}))}; "
        f"{correction} over the {len(frame)} comparisons of this table, α = {spec.alpha})."
    )
    return _render(head, body, caption, notes, style, "tab:beam-vs-exact")


def render_diagnostics(frame: pd.DataFrame, spec: CompareSpec, style: Style = MARKDOWN) -> str:
    """Every comparison of a row under the minimum sample, with its test and detectable effect."""
    fmt, names = style.fmt, style.names
    if frame.empty:
        text = f"No row was scored on fewer than {spec.min_users} test users."
        return text + "\n" if fmt == "markdown" else f"% {text}\n"
    head = ["Row", "Against", "Metric", "Row mean", "Reference", "n", "p (adj.)", "MDE"]
    body = [
        [
            display_name(r.system, names),
            display_name(r.reference, names),
            metric_label(r.metric),
            _format(r.mean_system),
            _format(r.mean_reference),
            str(int(r.n_users)),
            _format(r.p_adjusted, 3),
            _format(r.mde, 3),
        ]
        for r in frame.itertuples()
    ]
    correction = CORRECTION_NAMES.get(spec.correction, spec.correction)
    caption = (
        f"Diagnostics: the comparisons of rows scored on fewer than {spec.min_users} test users, "
        "which no table ranks."
    )
    notes = (
        f"{tests_used(frame) or spec.test}; {correction} over these {len(frame)} comparisons, "
        f"their own family. MDE: the difference each test could detect with 80% power."
    )
    return _render(head, body, caption, notes, style, "tab:diagnostics")

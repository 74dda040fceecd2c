"""The steer table: what a request in natural language adds, per model (issue 29).

For one request template of the grid (`report.steer_template`, one of `evaluation.steer`'s), every
model of the report that is not a variant (the baselines and each paradigm's row), and a variant
with a steered row of its own (the zero-shot text-prompted row), gets up to three rows, on the test
users a request could be written for:

- `history`: the run as it ranked (no request): NDCG@K and HR@K on the target, and steerability,
  the share of its top-K inside the request's constraint set C(request);
- `request`: its steered row, where one ran: a variant of it that ranks with the request (its
  metrics.json records the request template): `<model>_steer` (llm4rec.paradigms.steer: the same
  weights with the request in the prompt), `rta_reindex_steer`, AlphaRec's `alpharec_intent`;
  each metric tested against the `history` row on the users
  both scored (each user's metric averaged over the common seeds; the report's paired test), all
  the table's tests corrected together;
- `post-filter`: the run's own list filtered to C(request): the reference a model that cannot read
  text gets (steerability 1 by construction).

Where a model has a steered row, its `history` row is computed on that pair's users and seeds, so
the numbers printed side by side are the numbers tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from llm4rec.models import MODELS, paradigm_rank
from llm4rec.report.compare import CompareSpec, by_model
from llm4rec.report.runs import RunRecord
from llm4rec.report.tables import (
    CORRECTION_NAMES,
    DIRECTION_MARKS,
    TEST_NAMES,
    display_name,
    latex_escape,
    table_float,
)
from llm4rec.stats import correct, paired_test

CONDITIONS = ("history", "request", "post-filter")


def steer_columns(template: str, cutoff: int) -> dict[str, tuple[str, str]]:
    """Per printed metric: (the per-user column of the run as ranked, of its post-filtered list)."""
    return {
        f"ndcg_at_{cutoff}": (f"ndcg_at_{cutoff}", f"filtered_{template}_ndcg_at_{cutoff}"),
        f"hr_at_{cutoff}": (f"hr_at_{cutoff}", f"filtered_{template}_hr_at_{cutoff}"),
        f"steer_at_{cutoff}": (f"steer_{template}_at_{cutoff}", ""),
    }


def _seed_averaged(runs: Sequence[RunRecord], seeds: Sequence[int], columns: Sequence[str]):
    """Each user's columns averaged over `seeds` (users every one of those runs scored)."""
    frames = [r.per_user().set_index("user_id")[list(columns)] for r in runs if r.seed in seeds]
    users = sorted(set.intersection(*(set(f.index) for f in frames)))
    return pd.DataFrame(
        np.mean([f.loc[users].to_numpy(dtype=np.float64) for f in frames], axis=0),
        index=pd.Index(users, name="user_id"),
        columns=list(columns),
    )


def _request_wording(run: RunRecord) -> str | None:
    return (run.metrics.get("evaluation", {}).get("requests") or {}).get("template")


def steer_table_frame(
    runs: Sequence[RunRecord], template: str, cutoff: int, spec: CompareSpec | None = None
) -> pd.DataFrame:
    """Rows: dataset, model, paradigm, condition, steered_by (the steered row), seeds, n_users, one
    column per metric (`steer_columns`), and on `request` rows per metric its mean difference from
    `history`, p-value, Holm-adjusted p-value (over the whole table) and direction. Empty when the
    runs were evaluated without this template."""
    spec = spec or CompareSpec()
    groups = by_model(runs)
    metrics = steer_columns(template, cutoff)
    steer_column = metrics[f"steer_at_{cutoff}"][0]
    children: dict[tuple[str, str], str] = {}
    for (dataset, model), model_runs in groups.items():
        parent = MODELS[model].parent if model in MODELS else None
        if parent and (dataset, parent) in groups and _request_wording(model_runs[0]):
            if (dataset, parent) in children:
                raise ValueError(
                    f"{dataset}: {children[(dataset, parent)]} and {model} both rank {parent}'s "
                    "users with requests; the steer table sets one such row against its parent"
                )
            children[(dataset, parent)] = model
    rows = []
    for (dataset, model), model_runs in groups.items():
        variant = model in MODELS and MODELS[model].parent is not None
        if variant and (dataset, model) not in children:
            continue  # a steered row is printed under its parent, other variants not at all
        if steer_column not in model_runs[0].per_user().columns:
            continue
        child = children.get((dataset, model))
        seeds = sorted({r.seed for r in model_runs})
        if child:
            child_runs = groups[(dataset, child)]
            _check_wording(child_runs[0], model_runs[0], template)
            seeds = sorted(set(seeds) & {r.seed for r in child_runs})
        own = [c for pair in metrics.values() for c in pair if c]
        base = _seed_averaged(model_runs, seeds, own)
        if child:
            steered = _seed_averaged(child_runs, seeds, [p[0] for p in metrics.values()])
            base = base.loc[base.index.intersection(steered.index)]
        base = base[base[steer_column].notna()]  # the users a request could be written for
        common = {
            "dataset": dataset,
            "model": model,
            "paradigm": model_runs[0].paradigm,
            "steered_by": child or "",
            "seeds": ",".join(map(str, seeds)),
            "n_users": len(base),
        }
        rows.append(
            common
            | {"condition": "history"}
            | {m: float(base[c].mean()) for m, (c, _) in metrics.items()}
        )
        if child:
            steered = steered.loc[base.index]
            # whether the steered row's model trained with requests (its run.json; else zero-shot)
            trained = any(r.run.get("fit", {}).get("trained_with_requests") for r in child_runs)
            row = common | {"condition": "request", "trained_with_requests": trained}
            for m, (c, _) in metrics.items():
                a, b = steered[c].to_numpy(), base[c].to_numpy()
                row |= {
                    m: float(a.mean()),
                    f"{m}_diff": float((a - b).mean()),
                    f"{m}_p": paired_test(a, b, spec.test, spec.rounds, spec.seed)
                    if len(a) > 1
                    else np.nan,
                }
            rows.append(row)
        rows.append(
            common
            | {"condition": "post-filter"}
            | {m: float(base[f].mean()) if f else 1.0 for m, (_, f) in metrics.items()}
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    p_columns = [f"{m}_p" for m in metrics if f"{m}_p" in frame]
    if p_columns:
        flat = frame[p_columns].to_numpy(dtype=np.float64).ravel()
        tested = ~np.isnan(flat)
        adjusted = np.full(flat.shape, np.nan)
        adjusted[tested] = correct(flat[tested], spec.correction)
        adjusted = adjusted.reshape(len(frame), len(p_columns))
        for j, column in enumerate(p_columns):
            m = column[: -len("_p")]
            frame[f"{m}_p_adjusted"] = adjusted[:, j]
            significant = frame[f"{m}_p_adjusted"] < spec.alpha
            frame[f"{m}_direction"] = np.where(
                significant, np.where(frame[f"{m}_diff"] > 0, "better", "worse"), ""
            )
    order = {c: i for i, c in enumerate(CONDITIONS)}
    frame["_order"] = [
        (paradigm_rank(p), i, order[c])
        for i, (p, c) in enumerate(zip(frame["paradigm"], frame["condition"], strict=True))
    ]
    frame["_first"] = frame.groupby(["dataset", "model"], sort=False)["_order"].transform("first")
    frame = frame.sort_values(["dataset", "_first", "_order"], kind="stable")
    return frame.drop(columns=["_order", "_first"]).reset_index(drop=True)


def _check_wording(child: RunRecord, parent: RunRecord, template: str) -> None:
    """A steered row's request must be the template the table reads (the grid's wording)."""
    wording = (parent.metrics.get("steer") or {}).get("templates", {}).get(template)
    asked = _request_wording(child)
    if wording is not None and asked != wording:
        raise ValueError(
            f"{child.folder}: the steered row's request is worded '{asked}', the table's template "
            f"'{template}' is '{wording}' (report.steer_template, evaluation.steer.templates): "
            "give the row the template's wording"
        )


CONDITION_TITLES = {
    "history": "history",
    "request": "+ request",
    "post-filter": "post-filtered to C",
}


def steer_caption(template: str, wording: str, cutoff: int, spec: CompareSpec) -> str:
    test = TEST_NAMES.get(spec.test, spec.test)
    correction = CORRECTION_NAMES.get(spec.correction, spec.correction)
    return (
        f"Steerability, request template '{template}'"
        + (f' ("{wording}", from the target\'s metadata, never its title)' if wording else "")
        + f": NDCG@{cutoff} and HR@{cutoff} on the target; Steer@{cutoff}, the share of the top-"
        f"{cutoff} inside C(request), the catalogue items that satisfy the request. history: the "
        "run as it ranked. + request: the same weights with the request in the prompt (zero-shot: "
        "the model trained without requests, unless the row says it trained with them); ↑ / ↓ "
        "better / worse than history on the same users "
        f"({test} over users, each user's metric averaged over the common seeds; {correction} "
        f"correction over the table's comparisons, α = {spec.alpha}). post-filtered to C: the "
        "run's list filtered to C(request), the reference for a model that cannot read text "
        "(Steer 1 by construction). n: test users a request could be written for."
    )


def render_steer(
    frame: pd.DataFrame,
    cutoff: int,
    spec: CompareSpec,
    fmt: str = "markdown",
    names: Mapping[str, str] | None = None,
    template: str = "",
    wording: str = "",
    label: str = "tab:steer",
) -> str:
    """The steer table as Markdown or LaTeX: Model, Input, NDCG, HR, Steer, n; one row per
    condition (`CONDITIONS`), ↑/↓ on `request` rows."""
    caption = steer_caption(template, wording, cutoff, spec)
    if frame.empty:
        text = "No steerability: no run was evaluated with the template."
        return text + "\n" if fmt == "markdown" else f"% {text}\n"
    latex = fmt == "latex"
    metrics = list(steer_columns(template, cutoff))
    head = ["Model", "Input", f"NDCG@{cutoff}", f"HR@{cutoff}", f"Steer@{cutoff}", "n"]
    several = frame["dataset"].nunique() > 1
    body = []
    for _, block in frame.groupby(["dataset", "model"], sort=False):
        for i, (_, row) in enumerate(block.iterrows()):
            name = display_name(row["model"], names) + (f" ({row['dataset']})" if several else "")
            condition = CONDITION_TITLES[row["condition"]]
            trained = row.get("trained_with_requests")
            if row["condition"] == "request" and isinstance(trained, bool | np.bool_) and trained:
                condition += " (trained with requests)"
            cells = [name if i == 0 else "", condition]
            for m in metrics:
                direction = row.get(f"{m}_direction")
                arrow, command = (
                    DIRECTION_MARKS.get(direction, ("", ""))
                    if isinstance(direction, str)
                    else ("", "")
                )
                value = f"{row[m]:.4f}"
                cells.append(
                    (latex_escape(value) + (rf"$^{{\{command}}}$" if command else ""))
                    if latex
                    else value + arrow
                )
            cells.append(str(int(row["n_users"])))
            body.append(cells)
    if not latex:
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + caption + "\n"
    tabular = [r"\begin{tabular}{llrrrr}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for cells in body:
        first = [latex_escape(c) for c in cells[:2]]
        tabular.append(" & ".join(first + cells[2:]) + r" \\")
    tabular.append(r"\bottomrule")
    tabular.append(r"\end{tabular}")
    return table_float(tabular, latex_escape(caption), label, [], [r"\small"])

"""The steer table: what a request in natural language does to a model's list, per model.

For one request template of the grid (`report.steer_template`, one of `evaluation.steer`'s), every
model of the report that is not a variant (the baselines and each paradigm's row), and a variant
with a steered row of its own (the zero-shot text-prompted row, IDIOMoE trained with requests),
gets up to three rows, on the test users both requests could be written for
(llm4rec.evaluation.steerability):

- `history`: the run as it ranked (no request);
- `request`: its steered row, where one ran: a row that ranks with the user's request (its
  metrics.json records the template): `<model>_steer` (the same weights with the request in the
  prompt), `rta_reindex_steer`, AlphaRec's `alpharec_intent`;
- `post-filter`: the run's first `filter_depth` items filtered to the oracle request's set C: the
  request-aware reference a model that cannot read text gets (Steer 1 by construction).

Two requests, two tables:

- the headline, counterfactual requests (a genre and/or decade the target does not have, drawn
  from the catalogue per user: NEO's steerability, control of the list by an instruction that does
  not come from the target): Steer@K (the share of the top-K inside C), the chance rate (the share
  of the user's candidates inside C) and the lift (mean share / mean chance). Every row's share is
  tested against its chance rate (paired over users: does the list follow the request beyond
  chance?), and a request row's share against its history row's (does reading the request move the
  list?);
- the oracle requests (written from the target: an upper bound, never an accuracy result): NDCG@K
  and HR@K on the target, Steer@K and its lift; a request row tested against its history row and
  against MostPop's list post-filtered to C (the simplest request-aware ranker) on the same users.

Every test of the table is corrected together (`report.correction`). Where a model has a steered
row, its `history` row is computed on that pair's users and seeds, so the numbers printed side by
side are the numbers tested.
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
    MARKDOWN,
    TEST_NAMES,
    Style,
    display_name,
    latex_escape,
    table_float,
)
from llm4rec.stats import choose_test, correct, paired_test

CONDITIONS = ("history", "request", "post-filter")
REFERENCE_MODEL = "mostpop"  # the request-aware floor: its list post-filtered to C


def steer_columns(template: str, cutoff: int) -> dict[str, str]:
    """The table's figures -> the per-user column the evaluator writes for them."""
    return {
        "cf_steer": f"cf_steer_{template}_at_{cutoff}",
        "cf_chance": f"cf_chance_{template}",
        "ndcg": f"ndcg_at_{cutoff}",
        "hr": f"hr_at_{cutoff}",
        "steer": f"steer_{template}_at_{cutoff}",
        "chance": f"chance_{template}",
        "filtered_ndcg": f"filtered_{template}_ndcg_at_{cutoff}",
        "filtered_hr": f"filtered_{template}_hr_at_{cutoff}",
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


def _steered_rows(groups: dict[tuple[str, str], list[RunRecord]]) -> dict[tuple[str, str], str]:
    """(dataset, parent) -> its steered row: a registry child of it that ranked with requests."""
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
    return children


def _test(row: dict, name: str, a: np.ndarray, b: np.ndarray, spec: CompareSpec) -> dict:
    """`name`_diff (mean of a - b) and `name`_p (the report's paired test) into `row`."""
    row[f"{name}_diff"] = float((a - b).mean())
    tested = len(a) > 1
    # the test that matches the figure: a hit rate's by McNemar where binary (llm4rec.stats)
    used = choose_test("hr_at_k" if name.startswith("hr") else name, a, b, spec.test)
    row[f"{name}_test"] = used
    row[f"{name}_p"] = paired_test(a, b, used, spec.rounds, spec.seed) if tested else np.nan
    return row


def steer_table_frame(
    runs: Sequence[RunRecord], template: str, cutoff: int, spec: CompareSpec | None = None
) -> pd.DataFrame:
    """Rows: dataset, model, paradigm, condition, steered_by, seeds, n_users, the figures of
    `steer_columns` (means over the rows' users; lifts as mean share / mean chance), and per test
    its mean difference, p-value, adjusted p-value (all the table's tests together) and direction:
    `cf_lift` and `lift` (share against chance), on request rows `cf_steer`, `steer`, `ndcg`, `hr`
    (against history) and `ndcg_vs_mostpop`, `hr_vs_mostpop` (against MostPop's list post-filtered
    to the oracle C). Empty when the runs were evaluated without this template."""
    spec = spec or CompareSpec()
    groups = by_model(runs)
    columns = steer_columns(template, cutoff)
    children = _steered_rows(groups)
    mostpop = {d: rs for (d, m), rs in groups.items() if m == REFERENCE_MODEL}
    rows = []
    for (dataset, model), model_runs in groups.items():
        variant = model in MODELS and MODELS[model].parent is not None
        if variant and (dataset, model) not in children:
            continue  # a steered row is printed under its parent, other variants not at all
        if columns["cf_steer"] not in model_runs[0].per_user().columns:
            continue
        child = children.get((dataset, model))
        seeds = sorted({r.seed for r in model_runs})
        if child:
            child_runs = groups[(dataset, child)]
            _check_wording(child_runs[0], model_runs[0], template)
            seeds = sorted(set(seeds) & {r.seed for r in child_runs})
        base = _seed_averaged(model_runs, seeds, list(columns.values()))
        if child:
            steered = _seed_averaged(child_runs, seeds, list(columns.values())[:6])
            base = base.loc[base.index.intersection(steered.index)]
        # the users both requests could be written for
        base = base[base[columns["steer"]].notna() & base[columns["cf_steer"]].notna()]
        common = {
            "dataset": dataset,
            "model": model,
            "paradigm": model_runs[0].paradigm,
            "steered_by": child or "",
            "seeds": ",".join(map(str, seeds)),
            "n_users": len(base),
        }
        rows.append(common | {"condition": "history"} | _figures(base, columns, spec))
        if child:
            steered = steered.loc[base.index]
            # whether the steered row's model trained with requests (its run.json; else zero-shot)
            trained = any(r.run.get("fit", {}).get("trained_with_requests") for r in child_runs)
            row = common | {"condition": "request", "trained_with_requests": trained}
            row |= _figures(steered, columns, spec)
            for name in ("cf_steer", "steer", "ndcg", "hr"):
                column = columns[name]
                _test(row, name, steered[column].to_numpy(), base[column].to_numpy(), spec)
            if dataset in mostpop:
                floor = _seed_averaged(
                    mostpop[dataset],
                    sorted({r.seed for r in mostpop[dataset]}),
                    [columns["filtered_ndcg"], columns["filtered_hr"]],
                ).loc[base.index]
                for name in ("ndcg", "hr"):
                    a, b = steered[columns[name]], floor[columns[f"filtered_{name}"]]
                    _test(row, f"{name}_vs_mostpop", a.to_numpy(), b.to_numpy(), spec)
                    row[f"{name}_mostpop_filtered"] = float(b.mean())
            rows.append(row)
        rows.append(
            common
            | {
                "condition": "post-filter",
                "ndcg": float(base[columns["filtered_ndcg"]].mean()),
                "hr": float(base[columns["filtered_hr"]].mean()),
                "steer": 1.0,
                "chance": float(base[columns["chance"]].mean()),
                "lift": 1.0 / float(base[columns["chance"]].mean()),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    _correct(frame, spec)
    order = {c: i for i, c in enumerate(CONDITIONS)}
    frame["_order"] = [
        (paradigm_rank(p), i, order[c])
        for i, (p, c) in enumerate(zip(frame["paradigm"], frame["condition"], strict=True))
    ]
    frame["_first"] = frame.groupby(["dataset", "model"], sort=False)["_order"].transform("first")
    frame = frame.sort_values(["dataset", "_first", "_order"], kind="stable")
    return frame.drop(columns=["_order", "_first"]).reset_index(drop=True)


def _figures(users: pd.DataFrame, columns: Mapping[str, str], spec: CompareSpec) -> dict:
    """A row's means, its lifts (mean share / mean chance) and each share tested against its
    chance rate (`cf_lift_p`, `lift_p`)."""
    out = {name: float(users[columns[name]].mean()) for name in ("cf_steer", "cf_chance")}
    out |= {name: float(users[columns[name]].mean()) for name in ("ndcg", "hr", "steer", "chance")}
    for prefix in ("cf_", ""):
        share, chance = users[columns[f"{prefix}steer"]], users[columns[f"{prefix}chance"]]
        out[f"{prefix}lift"] = float(share.mean() / chance.mean()) if chance.mean() else np.nan
        _test(out, f"{prefix}lift", share.to_numpy(), chance.to_numpy(), spec)
    return out


def _correct(frame: pd.DataFrame, spec: CompareSpec) -> None:
    """Adjusted p-values over every test of the table, and each test's direction."""
    p_columns = [c for c in frame.columns if c.endswith("_p")]
    flat = frame[p_columns].to_numpy(dtype=np.float64).ravel()
    tested = ~np.isnan(flat)
    adjusted = np.full(flat.shape, np.nan)
    adjusted[tested] = correct(flat[tested], spec.correction)
    adjusted = adjusted.reshape(len(frame), len(p_columns))
    for j, column in enumerate(p_columns):
        name = column[: -len("_p")]
        frame[f"{name}_p_adjusted"] = adjusted[:, j]
        significant = frame[f"{name}_p_adjusted"] < spec.alpha
        frame[f"{name}_direction"] = np.where(
            significant, np.where(frame[f"{name}_diff"] > 0, "better", "worse"), ""
        )
    frame.attrs["tests"] = int(tested.sum())


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
KINDS = ("counterfactual", "oracle")  # the two tables: steer.* and steer_oracle.*


def steer_caption(kind: str, template: str, cutoff: int) -> str:
    """One sentence (the rest: `steer_notes`)."""
    if kind == "counterfactual":
        return (
            f"Steerability by counterfactual requests (template '{template}'): the share of the "
            f"top-{cutoff} inside the request's set, against its chance rate."
        )
    return (
        f"Oracle requests (template '{template}', written from the test target): an upper bound "
        "on what a request adds, not an accuracy result."
    )


def steer_notes(
    kind: str, template: str, wording: str, cutoff: int, spec: CompareSpec, tests: int
) -> str:
    """What the steer table's columns and marks mean."""
    test = TEST_NAMES.get(spec.test, spec.test)
    correction = CORRECTION_NAMES.get(spec.correction, spec.correction)
    marks = (
        f"{test} over users, each user's value averaged over the common seeds; {correction} "
        f"over the {tests} tests of the steer tables, α = {spec.alpha}"
    )
    said = f' ("{wording}")' if wording else ""
    if kind == "counterfactual":
        return (
            f"Request{said}: per user, a genre and decade drawn from the catalogue that the test "
            f"target does not have. Steer@{cutoff}: the share of the top-{cutoff} inside the "
            "request's set C; chance: the share of the user's candidates inside C; lift: Steer / "
            "chance. Lift ↑ / ↓: the share is significantly above / below chance; Steer ↑ / ↓ on "
            f"+ request: above / below the same model without the request ({marks}). n: test "
            "users."
        )
    return (
        f"Request{said}: the test target's own genres and decade, so it nearly names the target "
        f"where C is small. NDCG@{cutoff} and HR@{cutoff} on the target; Steer@{cutoff} and lift "
        "as in the counterfactual table. + request: ↑ / ↓ against the same model without it; vs "
        "MostPop+C: against MostPop's list post-filtered to C on the same users (NDCG). "
        "post-filtered to C: the list's first items (the same depth for every model) filtered to "
        f"C ({marks}). n: test users."
    )


def _mark(row: pd.Series, name: str, latex: bool) -> str:
    direction = row.get(f"{name}_direction")
    if not isinstance(direction, str) or direction not in DIRECTION_MARKS:
        return ""
    arrow, command = DIRECTION_MARKS[direction]
    return rf"$^{{\{command}}}$" if latex else arrow


def _value(row: pd.Series, name: str, latex: bool, decimals: int = 4, mark: str = "") -> str:
    value = row.get(name)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "--" if latex else ""
    text = f"{value:.{decimals}f}"
    return text + (_mark(row, mark, latex) if mark else "")


def render_steer(
    frame: pd.DataFrame,
    cutoff: int,
    spec: CompareSpec,
    style: Style = MARKDOWN,
    template: str = "",
    wording: str = "",
    kind: str = "counterfactual",
) -> str:
    """One steer table (`kind`: counterfactual, the headline; oracle, the upper bound) as Markdown
    or LaTeX."""
    fmt, names, float_ = style.fmt, style.names, style.float_
    label = style.label or "tab:steer"
    tests = int(frame.attrs.get("tests", 0)) if not frame.empty else 0
    caption = steer_caption(kind, template, cutoff)
    notes = steer_notes(kind, template, wording, cutoff, spec, tests)
    if frame.empty:
        text = "No steerability: no run was evaluated with the template."
        return text + "\n" if fmt == "markdown" else f"% {text}\n"
    latex = fmt == "latex"
    if kind == "counterfactual":
        frame = frame[frame["condition"] != "post-filter"]
        head = ["Model", "Input", f"Steer@{cutoff}", "chance", "lift", "n"]
        figures = [("cf_steer", 4, "cf_steer"), ("cf_chance", 4, ""), ("cf_lift", 2, "cf_lift")]
    else:
        head = ["Model", "Input", f"NDCG@{cutoff}", "vs MostPop+C", f"HR@{cutoff}"]
        head += [f"Steer@{cutoff}", "lift", "n"]
        figures = [("ndcg", 4, "ndcg"), ("ndcg_vs_mostpop", -1, "ndcg_vs_mostpop")]
        figures += [("hr", 4, "hr"), ("steer", 4, "steer"), ("lift", 2, "lift")]
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
            if latex:
                cells = [latex_escape(c) for c in cells]
            for figure, decimals, mark in figures:
                if decimals < 0:  # a test's verdict alone
                    p = row.get(f"{figure}_p")
                    tested = isinstance(p, float) and not np.isnan(p)
                    cells.append(
                        (_mark(row, figure, latex) or "n.s.") if tested else ("--" if latex else "")
                    )
                    continue
                cells.append(_value(row, figure, latex, decimals, mark))
            cells.append(str(int(row["n_users"])))
            body.append(cells)
    if not latex:
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + caption + " " + notes + "\n"
    tabular = [
        r"\begin{tabular}{ll" + "r" * (len(head) - 2) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in head) + r" \\",
        r"\midrule",
    ]
    tabular += [" & ".join(cells) + r" \\" for cells in body]
    tabular += [r"\bottomrule", r"\end{tabular}"]
    return table_float(tabular, latex_escape(caption), label, [], [r"\small"], float_)

"""Paper tables: the main results table (LaTeX/booktabs, Markdown, CSV) and the cost table.

The main table: rows grouped by paradigm, a Seeds column, columns dataset x metric. Every number
is the one its significance test was computed on: a model's mean over the users and seeds it shares
with the column's best baseline (chosen on validation). Where that is not the baseline's own full
sample (a user sample, fewer seeds), an italic line under the row gives the baseline's value on the
same users and seeds. Best per column in bold, second underlined, ranked by the paired difference
with the best baseline; significance marks from the comparison family (an up / down arrow:
significantly better / worse over users after correction; a double dagger: also over per-seed
means; in all-pairs mode, superscript letters name the models a cell is significantly better
than), an optional relative-improvement column per dataset (paired), and a generated caption that
states the protocol. A model missing on a dataset, or a metric beyond a model's ranking
depth, shows as a dash with a footnote; a model scored on a declared sample of the test users
is starred, with the sample size in a footnote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from llm4rec.models import model_title, paradigm_rank, paradigm_title, registered_costs
from llm4rec.report.compare import LOWER_IS_BETTER, CompareSpec, by_model, family
from llm4rec.report.runs import RunRecord, refuse_request_rows
from llm4rec.stats import MIN_SEEDS
from llm4rec.stats import TEST_NAMES as STATS_TEST_NAMES

TEST_NAMES = STATS_TEST_NAMES | {"auto": "the test that matches each metric"}
CORRECTION_NAMES = {
    "holm": "Holm-Bonferroni",
    "bonferroni": "Bonferroni",
    "bh": "Benjamini-Hochberg",
    "none": "no",
}
SPLIT_NAMES = {
    "leave_one_out": "leave-one-out by time (last interaction test, second-to-last validation)",
    "global_temporal": "global temporal split",
    "ratio": "a seeded random split of each user's interactions by ratio (RecBole's general "
    "protocol; several test targets per user, training and validation items excluded)",
}


def display_name(model: str, names: Mapping[str, str] | None = None) -> str:
    """A model's name in paper tables and figures: the grid's `report.display_names` override,
    else the registry's display name (ModelSpec.display), else its key."""
    return (names or {}).get(model) or model_title(model)


def metric_label(metric: str) -> str:
    """'ndcg_at_10' -> 'NDCG@10'."""
    name, _, k = metric.partition("_at_")
    pretty = {
        "hr": "HR",
        "ndcg": "NDCG",
        "mrr": "MRR",
        "recall": "Recall",
        "coverage": "Cov",
        "avg_popularity": "AvgPop",
    }
    return f"{pretty.get(name, name)}@{k}" if k else name


@dataclass(frozen=True)
class Style:
    """How a `render_*` writes its table: `fmt` markdown or latex, the rows' display `names`, and
    for LaTeX its `label` (empty: the table's own) and float placement (`float_`, table_float)."""

    fmt: str = "markdown"
    names: Mapping[str, str] | None = None
    label: str = ""
    float_: str = "auto"


MARKDOWN = Style()  # a table as Markdown, rows under their registry display names


@dataclass
class TableCell:
    mean: float
    std: float
    n_seeds: int
    bold: bool = False
    underline: bool = False
    marks: str = ""  # "better" / "worse" than the best baseline, or letters (all-pairs mode)
    seed_significant: bool = False  # the per-seed-means test agrees (two or more common seeds)
    diff: float | None = None  # paired difference with the column's best baseline (0 for itself)
    reference: float | None = (
        None  # the best baseline on this row's users and seeds, where not its full sample
    )


@dataclass
class MainTable:
    datasets: list[str]
    metrics: list[str]
    rows: list[tuple[str, str]]  # (paradigm, model), grouped by paradigm
    cells: dict[tuple[str, str, str], TableCell]  # (model, dataset, metric)
    improvement: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, dataset) -> %
    letters: dict[str, str] = field(default_factory=dict)
    caption: str = ""
    label: str = "tab:results"
    show_std: bool = False
    decimals: int = 4
    # (model, dataset) -> (n, of N)
    samples: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # display-name overrides (report.display_names)
    names: dict[str, str] = field(default_factory=dict)
    # (model, dataset) -> seeds behind its numbers
    seeds: dict[tuple[str, str], int] = field(default_factory=dict)
    # (dataset, metric) -> best baseline
    references: dict[tuple[str, str], str] = field(default_factory=dict)
    # the protocol, marks, tests and power behind the numbers: under the Markdown table, and in
    # the report's notes.tex (\llmrecnotes) for LaTeX, so the caption stays one or two sentences
    notes_text: str = ""
    improving: set[str] = field(default_factory=set)  # rows still improving at their budget's end
    left_out: dict[str, str] = field(default_factory=dict)  # model -> which table holds it

    @property
    def has_missing(self) -> bool:
        return any(
            (m, d, metric) not in self.cells
            for _, m in self.rows
            for d in self.datasets
            for metric in self.metrics
        )

    def notes(self) -> list[tuple[str, str]]:
        """Footnotes under the table as (mark, plain text); each renderer draws the mark its way
        ("dash": – / --, "star": * / $^{*}$)."""
        notes = (
            [
                (
                    "dash",
                    "not run on this dataset, or the cutoff is beyond the model's ranking depth.",
                )
            ]
            if self.has_missing
            else []
        )
        if self.improving:
            notes.append(
                (
                    "improving",
                    "still improving at the end of its budget (its best validation score among "
                    "its last evaluations, the curve still rising): the budget, not the paradigm, "
                    "may decide its number.",
                )
            )
        by_model: dict[str, list[str]] = {}
        for (model, dataset), (n, total) in sorted(self.samples.items()):
            by_model.setdefault(model, []).append(f"{n} of {total} on {dataset}")
        if by_model:
            notes.append(
                (
                    "star",
                    "scored on a seeded uniform sample of the test users ("
                    + "; ".join(
                        f"{display_name(model, self.names)}: {', '.join(parts)}"
                        for model, parts in by_model.items()
                    )
                    + "), the same users for every sampled model; its significance tests use "
                    "those users.",
                )
            )
        return notes

    def is_sampled(self, model: str) -> bool:
        return any(m == model for m, _ in self.samples)

    def name_marks(self, model: str) -> list[str]:
        """The footnote marks a row's name carries."""
        return [
            m
            for m, on in (("star", self.is_sampled(model)), ("improving", model in self.improving))
            if on
        ]

    def has_reference_line(self, model: str) -> bool:
        return any(c.reference is not None for (m, _, _), c in self.cells.items() if m == model)

    def reference_line_name(self) -> str:
        """Who the italic line under a row is: the best baseline's name when every column has the
        same one."""
        names = set(self.references.values())
        return display_name(names.pop(), self.names) if len(names) == 1 else "best baseline"

    def seeds_text(self, model: str) -> str:
        counts = [str(self.seeds[(model, d)]) for d in self.datasets if (model, d) in self.seeds]
        return "/".join(counts) if len(set(counts)) > 1 else (counts[0] if counts else "--")


def _n_users(run: RunRecord) -> int:
    n = run.metrics.get("evaluation", {}).get("n_users", {}).get("test")
    return int(n) if n is not None else len(run.per_user())


def table_rows(runs: Sequence[RunRecord], min_users: int) -> tuple[list[RunRecord], dict[str, str]]:
    """The runs a ranked accuracy table holds, and the rows it leaves out with the table that holds
    them: an exact-ranking row (beam_vs_exact) and a row scored on fewer than `min_users` test
    users (diagnostics)."""
    from llm4rec.report.compare import table_of

    kept, left_out = [], {}
    for r in runs:
        if table_of(r.model) != "accuracy":
            left_out[r.model] = table_of(r.model)
        elif _n_users(r) < min_users:
            left_out[r.model] = "diagnostics"
        else:
            kept.append(r)
    return kept, left_out


def build_main_table(
    runs: Sequence[RunRecord],
    comparisons: pd.DataFrame,
    spec: CompareSpec,
    *,
    show_std: bool = False,
    improvement: bool = True,
    label: str = "tab:results",
    decimals: int = 4,
    names: Mapping[str, str] | None = None,
) -> MainTable:
    """The main table of `runs` against the best baseline (the main family of `comparisons`).
    Rows that read a request are refused; exact-ranking rows and rows under `spec.min_users` test
    users are left out (their tables: beam_vs_exact, diagnostics). Bold, underline and Impr. rank
    only the rows scored on the best baseline's own users and seeds."""
    refuse_request_rows(runs, "the main table")
    runs, left_out = table_rows(runs, spec.min_users)
    groups = by_model(runs)
    datasets = sorted({r.dataset for r in runs})
    paradigm_of = {r.model: r.paradigm for r in runs}
    rows = sorted(
        {(paradigm_of[m], m) for m in paradigm_of}, key=lambda pm: (paradigm_rank(pm[0]), pm[1])
    )
    metrics = list(spec.metrics)
    cells: dict[tuple[str, str, str], TableCell] = {}
    samples, seeds = {}, {}
    for (dataset, model), rs in groups.items():
        evaluation = rs[0].metrics.get("evaluation", {})
        n, total = (
            evaluation.get("n_users", {}).get("test"),
            evaluation.get("all_users", {}).get("test"),
        )
        if n is not None and total is not None and n < total:
            samples[(model, dataset)] = (n, total)
        seeds[(model, dataset)] = len(rs)
        for metric in metrics:
            if any(metric not in r.metrics["test"] for r in rs):
                continue  # beyond this model's ranking depth
            values = np.array([r.metrics["test"][metric] for r in rs])
            cells[(model, dataset, metric)] = TableCell(
                float(values.mean()),
                float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                len(values),
            )
    main = family(comparisons, "main") if len(comparisons) else comparisons
    main = main[main["system"].isin(paradigm_of) & main["reference"].isin(paradigm_of)]
    references: dict[tuple[str, str], str] = {}
    full_sample: set[tuple[str, str]] = set()  # (model, dataset) on the reference's own sample
    if spec.mode == "best_baseline":  # print what was tested: the paired sample's means
        for c in main.itertuples():
            references[(c.dataset, c.metric)] = c.reference
            cell, base = (
                cells[(c.system, c.dataset, c.metric)],
                cells[(c.reference, c.dataset, c.metric)],
            )
            cell.mean, cell.diff, base.diff = float(c.mean_system), float(c.diff), 0.0
            ref_runs = groups[(c.dataset, c.reference)]
            if int(c.n_seeds) != len(ref_runs) or int(c.n_users) != _n_users(ref_runs[0]):
                cell.reference = float(c.mean_reference)
            else:
                full_sample.add((c.system, c.dataset))
            if c.metric == metrics[0]:
                seeds[(c.system, c.dataset)] = int(c.n_seeds)
        full_sample |= {(ref, d) for (d, _), ref in references.items()}
    lower = {m: m in LOWER_IS_BETTER for m in metrics}
    for dataset in datasets:
        for metric in metrics:
            # with a reference, the rows on its own users and seeds are ranked by their paired
            # difference with it (a row on a sample is not ranked); otherwise by their means
            paired = (dataset, metric) in references
            column = [
                ((c.diff if paired else c.mean), m)
                for _, m in rows
                if (c := cells.get((m, dataset, metric))) is not None
                and (not paired or (c.diff is not None and (m, dataset) in full_sample))
            ]
            distinct = sorted({v for v, _ in column}, reverse=not lower[metric])
            for value, model in column:
                cell = cells[(model, dataset, metric)]
                cell.bold = value == distinct[0]
                cell.underline = len(distinct) > 1 and value == distinct[1]
    letters = (
        {m: chr(ord("a") + i) for i, (_, m) in enumerate(rows)} if spec.mode == "all_pairs" else {}
    )
    for c in main[main["significant"].astype(bool)].itertuples() if len(main) else []:
        direction = (c.diff > 0) != lower[c.metric]  # True: the system is the better one
        if spec.mode == "best_baseline":
            cell = cells[(c.system, c.dataset, c.metric)]
            cell.marks = "better" if direction else "worse"
            cell.seed_significant = bool(getattr(c, "significant_seed", False))
        else:
            better, worse = (c.system, c.reference) if direction else (c.reference, c.system)
            cell = cells[(better, c.dataset, c.metric)]
            cell.marks = "".join(sorted(set(cell.marks) | {letters[worse]}))
    table = MainTable(
        datasets,
        metrics,
        rows,
        cells,
        letters=letters,
        label=label,
        show_std=show_std,
        decimals=decimals,
        samples=samples,
        names=dict(names or {}),
        seeds=seeds,
        references=references,
        improving={
            m
            for m, rs in by_model_name(runs).items()
            if any(r.convergence == "still improving" for r in rs)
        },
        left_out=left_out,
    )
    if improvement and spec.mode == "best_baseline":
        primary = metrics[0]
        for c in main[main["metric"] == primary].itertuples() if len(main) else []:
            if c.mean_reference and (c.system, c.dataset) in full_sample:
                table.improvement[(c.system, c.dataset)] = (
                    100 * float(c.diff) / abs(float(c.mean_reference))
                )
    table.caption = caption(runs, main, spec, table)
    table.notes_text = main_notes(runs, main, spec, table)
    return table


def by_model_name(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in runs:
        out.setdefault(r.model, []).append(r)
    return out


def tests_used(comparisons: pd.DataFrame) -> str:
    """Which test each metric's comparisons used ('HR@10: exact McNemar test; NDCG@10: ...')."""
    if "test" not in comparisons or comparisons.empty:
        return ""
    parts = []
    for metric, group in comparisons.groupby("metric", sort=False):
        used = sorted(set(group["test"].astype(str)))
        parts.append(
            f"{metric_label(metric)}: {' or '.join(STATS_TEST_NAMES.get(t, t) for t in used)}"
        )
    return "; ".join(parts)


def power_sentence(comparisons: pd.DataFrame) -> str:
    """What the tests could not have detected: per sample size, the median minimum detectable
    effect (80% power at the family's alpha / m) of each metric."""
    if "mde" not in comparisons or comparisons["mde"].isna().all():
        return ""
    parts = []
    for n, group in sorted(comparisons.groupby("n_users"), key=lambda g: -int(g[0])):
        metrics = ", ".join(
            f"{g['mde'].median():.3f} in {metric_label(m)}"
            for m, g in group.groupby("metric", sort=False)
            if g["mde"].notna().any()
        )
        if metrics:
            parts.append(f"with {int(n):,} users, differences below {metrics}")
    return (
        "Power: "
        + "; ".join(parts)
        + " could not be detected (80% power at the family's α / m, the median over its "
        "comparisons; each comparison's in comparisons.csv, `mde`): a missing mark there is no "
        "evidence of no difference."
    )


def seed_sentence(comparisons: pd.DataFrame, correction: str) -> str:
    """The seed-level test's sentence: ‡ with Welch's test where 3+ seeds are shared, else why
    there is none."""
    seeded = int(comparisons["p_seed"].notna().sum()) if "p_seed" in comparisons else 0
    most = int(comparisons["n_seeds"].max()) if len(comparisons) else 0
    if seeded:
        return (
            "‡: also significant over seeds (Welch's t-test over per-seed means, the seeds of two "
            f"models independent; {correction} over the {seeded} comparisons with {MIN_SEEDS} or "
            "more seeds), the test that counts training variance."
        )
    return (
        f"Seed variance not tested ({most} seed{'s' if most != 1 else ''}): a seed-level test "
        f"needs {MIN_SEEDS} or more per model."
    )


def caption(
    runs: Sequence[RunRecord], comparisons: pd.DataFrame, spec: CompareSpec, table: MainTable
) -> str:
    """One or two sentences: what the table is; the protocol and marks are its notes."""
    if spec.mode == "best_baseline":
        return (
            f"Test results on {', '.join(table.datasets)}: every model against the best baseline "
            "chosen on validation, on the users and seeds both ran."
        )
    return f"Test results on {', '.join(table.datasets)}: every pair of models."


TIE_BREAK_WORDS = {
    "file_order": "the file's row order",
    "seeded": "a seeded shuffle",
    "item_id": "item id",
}


def tie_sentences(runs: Sequence[RunRecord]) -> list[str]:
    """Per dataset: how many test targets share their timestamp with the history's last item, and
    the rule that orders them (docs/protocol.md#ties)."""
    out = []
    for dataset in sorted({r.dataset for r in runs}):
        record = next(r for r in runs if r.dataset == dataset)
        stats, split = record.split_stats, record.run["run"]["dataset_config"]["split"]
        if split.get("method", "leave_one_out") != "leave_one_out" or not stats.get("test_users"):
            continue
        order = TIE_BREAK_WORDS.get(split.get("tie_break", "file_order"), split.get("tie_break"))
        ties = record.split_meta.get("test_ties")
        if ties:  # group or drop: the count the last-interaction rule would have had
            tied, of = ties["tied_users_if_kept"], ties["users_if_kept"]
            done = (
                f"here every interaction at a user's last timestamp is a test target "
                f"({stats.get('test_interactions')} targets for {stats['test_users']} users)"
                if ties["rule"] == "group"
                else f"here those users are dropped ({stats['test_users']} remain)"
            )
            out.append(
                f"Ties on {dataset}: with the last interaction as the target, {tied} of {of} "
                f"({100 * tied / of:.0f}%) would share their timestamp with the history's last "
                f"item; {done}; equal timestamps ordered by {order}."
            )
            continue
        tied, users = stats.get("test_tied_with_history"), stats["test_users"]
        if tied is None:
            continue
        out.append(
            f"Ties on {dataset}: {tied} of {users} test targets ({100 * tied / users:.0f}%) share "
            f"their timestamp with the history's last item, equal timestamps ordered by {order}."
        )
    return out


def source_sentences(
    runs: Sequence[RunRecord], names: Mapping[str, str] | None = None
) -> list[str]:
    """Which run each CF-injected row took its collaborative embeddings from (input `cf_source`):
    which SASRec (the paper's BCE `sasrec`, SASRec+ `sasrec_ce`, RecBole's `sasrec_recbole`)."""
    sources: dict[tuple[str, str], set[str]] = {}
    for record in runs:
        given = record.run.get("run", {}).get("inputs", {}).get("cf_source", {})
        if given.get("run"):
            where = ", ".join(
                f"{key} {given[key]}" if key in given else f"same {key}"
                for key in ("dataset", "seed")
            )
            sources.setdefault((given["run"], where), set()).add(record.model)
    return [
        f"CF embeddings of {', '.join(display_name(m, names) for m in sorted(models))}: "
        f"{display_name(source, names)} ({source}), {where}."
        for (source, where), models in sorted(sources.items())
    ]


def main_notes(
    runs: Sequence[RunRecord], comparisons: pd.DataFrame, spec: CompareSpec, table: MainTable
) -> str:
    """The protocol, the marks, the tests, the family and the power behind the table."""
    split_methods = sorted({r.run["run"]["dataset_config"]["split"]["method"] for r in runs})
    parts = [
        f"{'; '.join(SPLIT_NAMES.get(s, s) for s in split_methods).capitalize()}; every model "
        "ranks the full catalogue minus the user's history.",
        *tie_sentences(runs),
    ]
    correction = CORRECTION_NAMES.get(spec.correction, spec.correction)
    kept = int((comparisons.get("verdict_from", pd.Series(dtype=str)) == "main report").sum())
    own = len(comparisons) - kept
    family_text = f"{correction} correction over the {own} comparisons of this table's family" + (
        f" ({kept} pairs also in the main table keep its verdict)" if kept else ""
    )
    if spec.mode == "best_baseline":
        parts.append(
            "Each value is a model's mean over the test users and seeds (column Seeds) it shares "
            "with the column's best baseline: the numbers its test compared"
            + (" (± sample std over its seeds)" if table.show_std else "")
            + "."
        )
        if any(table.has_reference_line(m) for _, m in table.rows):
            parts.append(
                "Where those are not all of the best baseline's users and seeds, the italic line "
                "below gives the best baseline's value on the same users and seeds."
            )
        parts.append(
            "Bold, underline and Impr. compare only rows scored on the best baseline's own users "
            "and seeds (best, second, relative "
            f"{metric_label(table.metrics[0])} change); a row on a user sample is not ranked."
        )
        parts.append(
            "↑ / ↓: significantly better / worse than the best baseline over users, each user's "
            f"metric averaged over the common seeds ({tests_used(comparisons) or spec.test}; "
            f"{family_text}, α = {spec.alpha})."
        )
        parts.append(seed_sentence(comparisons, correction))
    else:
        seeds = sorted({r.seed for r in runs})
        parts.append(
            f"Mean over each model's seeds (column Seeds; {len(seeds)} in all)"
            + (" (± sample std)" if table.show_std else "")
            + ". Best per column in bold, second underlined."
        )
        parts.append(
            "Superscript letters name the models a cell is significantly better than "
            f"({tests_used(comparisons) or spec.test}; {family_text}, α = {spec.alpha})."
        )
    power = power_sentence(comparisons)
    if power:
        parts.append(power)
    parts += source_sentences(runs, table.names)
    if table.left_out:
        where = {
            "diagnostics": f"the diagnostics table: fewer than {spec.min_users} test users",
            "beam_vs_exact": "the beam-vs-exact table: an exact ranking of a parent's weights",
        }
        parts.append(
            "Not ranked here: "
            + "; ".join(
                f"{display_name(m, table.names)} ({where.get(t, t)})"
                for m, t in sorted(table.left_out.items())
            )
            + "."
        )
    return " ".join(parts)


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


# Figures printed as whole numbers with thousands separators.
COUNT_KEYS = (
    "n_users",
    "parameters_total",
    "parameters_trainable",
    "train_tokens",
    "inference_tokens_per_user",
)


def format_number(key: str, value: float, std: float | None = None, compact: bool = False) -> str:
    """A metric or cost figure as the summary and the cost table print it (with ± std when given):
    a count whole (compact: from 100,000 on in millions, "1.23M"), a cost with its declared
    decimals (llm4rec.costs), an average popularity with 1, any other metric with 4."""
    if key in COUNT_KEYS:
        return f"{value / 1e6:.2f}M" if compact and value >= 1e5 else f"{value:,.0f}"
    decimals = next((c.decimals for c in registered_costs() if c.key == key), None)
    if decimals is None:
        decimals = 1 if key.startswith("avg_popularity_at_") else 4
    return f"{value:.{decimals}f}" + ("" if std is None else f" ± {std:.{decimals}f}")


def latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
    ):
        text = text.replace(char, escaped)
    return (
        text.replace("±", r"$\pm$")
        .replace("↑", r"$\uparrow$")
        .replace("↓", r"$\downarrow$")
        .replace("α", r"$\alpha$")
        .replace("‡", r"$\ddagger$")
        .replace("Δ", r"$\Delta$")
        .replace("∩", r"$\cap$")
        .replace("°", r"$^{\circ}$")
        .replace("†", r"$\dagger$")
        .replace("|", r"$|$")
        .replace("‖", r"$\|$")
        .replace("–", "--")
        .replace("≥", r"$\geq$")
        .replace("≤", r"$\leq$")
    )


LATEX_MARKS = {"dash": "--", "star": "$^{*}$", "improving": "$^{\\circ}$"}
# Markdown, LaTeX (no package needed)
DIRECTION_MARKS = {
    "better": ("↑", "uparrow"),
    "worse": ("↓", "downarrow"),
}
SEED_MARK = ("‡", r"\ddagger")  # also significant over per-seed means
MARKDOWN_MARKS = {"dash": "–", "star": "\\*", "improving": "°"}


def _latex_cell(cell: TableCell | None, table: MainTable) -> str:
    if cell is None:
        return "--"
    text = _fmt(cell.mean, table.decimals)
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    elif cell.underline:
        text = rf"\underline{{{text}}}"
    if table.show_std and cell.n_seeds > 1:  # one seed has no spread to show
        text += rf"{{\scriptsize$\pm${_fmt(cell.std, table.decimals)}}}"
    if cell.marks in DIRECTION_MARKS:
        seed = SEED_MARK[1] if cell.seed_significant else ""
        text += rf"$^{{\{DIRECTION_MARKS[cell.marks][1]}{seed}}}$"
    elif cell.marks:
        text += rf"$^{{\mathrm{{{cell.marks}}}}}$"
    return text


def _columns(table: MainTable) -> list[tuple[str, str | None]]:
    cols = []
    for dataset in table.datasets:
        cols += [(dataset, m) for m in table.metrics]
        if table.improvement and any(d == dataset for _, d in table.improvement):
            cols.append((dataset, None))  # the Impr. column
    return cols


def _reference_cells(
    model: str, table: MainTable, cols: list[tuple[str, str | None]]
) -> list[str | None]:
    """The best baseline's values on a row's users and seeds (None where its full sample is the
    row's)."""
    out = []
    for dataset, metric in cols:
        cell = table.cells.get((model, dataset, metric)) if metric else None
        out.append(
            None if cell is None or cell.reference is None else _fmt(cell.reference, table.decimals)
        )
    return out


# Figure columns in one part of the LaTeX main table: two datasets of four metrics and Impr. (the
# paper grid) fit a two-column page's text width at the scale floor; a grid with more datasets gets
# one float per group of datasets, each with the rows run there (the Markdown table stays one).
LATEX_PART_COLUMNS = 10


def latex_parts(table: MainTable) -> list[MainTable]:
    """The main table as the parts its LaTeX is set in: consecutive datasets, at most
    LATEX_PART_COLUMNS figure columns each (a dataset wider than that alone); each part keeps the
    rows, samples and marks of its own datasets; labels `label`, `label-2`, ..."""
    groups: list[list[str]] = []
    width = 0
    for dataset in table.datasets:
        own = sum(1 for d, _ in _columns(table) if d == dataset)
        if not groups or width + own > LATEX_PART_COLUMNS:
            groups.append([])
            width = 0
        groups[-1].append(dataset)
        width += own
    if len(groups) <= 1:
        return [table]
    parts = []
    for number, datasets in enumerate(groups, start=1):
        rows = [
            (paradigm, model)
            for paradigm, model in table.rows
            if any((model, d, m) in table.cells for d in datasets for m in table.metrics)
        ]
        models = {m for _, m in rows}
        parts.append(
            replace(
                table,
                datasets=datasets,
                rows=rows,
                samples={k: v for k, v in table.samples.items() if k[1] in datasets},
                improving=table.improving & models,
                caption=f"{table.caption.rstrip('.')} (part {number} of {len(groups)}: "
                f"{', '.join(datasets)}).",
                label=table.label if number == 1 else f"{table.label}-{number}",
            )
        )
    return parts


def render_latex(table: MainTable, float_: str = "auto") -> str:
    return "".join(_render_latex_part(part, float_) for part in latex_parts(table))


def _render_latex_part(table: MainTable, float_: str) -> str:
    cols = _columns(table)
    n_cols = 2 + len(cols)
    lines = [r"\begin{tabular}{lc" + "c" * len(cols) + "}", r"\toprule"]
    header, rules, start = ["Model", ""], [], 3
    for dataset in table.datasets:
        width = sum(1 for d, _ in cols if d == dataset)
        header.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(dataset)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    lines += [" & ".join(header) + r" \\", " ".join(rules)]
    lines.append(
        " & ".join(["", "Seeds"] + [metric_label(m) if m else "Impr." for _, m in cols]) + r" \\"
    )
    current = None
    reference_name = latex_escape(table.reference_line_name())
    for paradigm, model in table.rows:
        if paradigm != current:
            lines += [
                r"\midrule",
                rf"\multicolumn{{{n_cols}}}{{l}}"
                rf"{{\textit{{{latex_escape(paradigm_title(paradigm))}}}}} \\",
            ]
            current = paradigm
        name = (
            latex_escape(display_name(model, table.names))
            + "".join(LATEX_MARKS[mark] for mark in table.name_marks(model))
            + (rf"$^{{\mathrm{{({table.letters[model]})}}}}$" if table.letters else "")
        )
        cells = []
        for dataset, metric in cols:
            if metric is None:
                value = table.improvement.get((model, dataset))
                cells.append(
                    "--" if value is None else latex_escape(f"{value:+.1f}%").replace("-", "$-$")
                )
            else:
                cells.append(_latex_cell(table.cells.get((model, dataset, metric)), table))
        lines.append(" & ".join([name, table.seeds_text(model)] + cells) + r" \\")
        if table.has_reference_line(model):
            refs = [rf"\textit{{{v}}}" if v else "" for v in _reference_cells(model, table, cols)]
            lines.append(
                " & ".join([rf"\quad\textit{{{reference_name}, same users/seeds}}", ""] + refs)
                + r" \\"
            )
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [f"{LATEX_MARKS[mark]}: {latex_escape(note)}" for mark, note in table.notes()]
    return table_float(lines, latex_escape(table.caption), table.label, notes, [r"\small"], float_)


# Caption and footnotes wrap at the tabular's own width, with no package beyond booktabs and
# graphicx (threeparttable is not in texlive-latex-recommended): the tabular is set in a box, then
# caption, box and notes go in a minipage of the box's width (at most \linewidth). The float is
# chosen from that width at compile time (`auto`): `table` where the box fits \columnwidth,
# `table*` (the text width of a two-column template) where it does not; a box wider than the text
# width is scaled down to it, never below SCALE_FLOOR of its size (below that it overflows and the
# report's fit check fails naming the table), so no font shrinks under SCALE_FLOOR of \small.
TABLE_BOX = r"\llmrecTableBox"
FLOATS = ("auto", "table", "table*")
SCALE_FLOOR = (4, 5)  # 80%: \small (9 pt) never below 7.2 pt


def table_float(
    tabular: list[str],
    caption: str,
    label: str,
    notes: list[str],
    preamble: list[str],
    float_: str = "auto",
) -> str:
    """A `table` or `table*` float around `tabular` (its lines; `float_`: auto chooses by width)
    whose caption and footnotes are no wider than the tabular."""
    if float_ not in FLOATS:
        raise ValueError(f"report.latex_float '{float_}' is not one of: {', '.join(FLOATS)}")
    box = TABLE_BOX
    width = rf"\ifdim\wd{box}>\linewidth\linewidth\else\wd{box}\fi"
    num, den = SCALE_FLOOR
    shown = (
        rf"\ifdim\dimexpr\wd{box}*{num}/{den}\relax>\linewidth\usebox{{{box}}}"
        rf"\else\ifdim\wd{box}>\linewidth\resizebox{{\linewidth}}{{!}}{{\usebox{{{box}}}}}"
        rf"\else\usebox{{{box}}}\fi\fi"
    )

    def body(env: str) -> list[str]:
        lines = [
            rf"\begin{{{env}}}[t]",
            r"\centering",
            rf"\begin{{minipage}}{{{width}}}",
            rf"\caption{{{caption}}}",
            rf"\label{{{label}}}",
            rf"\par\smallskip\noindent{shown}",
        ]
        lines += [rf"\par\smallskip{{\footnotesize {note}\par}}" for note in notes]
        return lines + [r"\end{minipage}", rf"\end{{{env}}}"]

    lines = [
        rf"\ifdefined{box}\else\newsavebox{{{box}}}\fi",
        rf"\sbox{{{box}}}{{%",
        *preamble,
        *tabular,
        "}%",
    ]
    if float_ == "auto":
        lines += [
            rf"\ifdim\wd{box}>\columnwidth",
            *body("table*"),
            r"\else",
            *body("table"),
            r"\fi",
        ]
    else:
        lines += body(float_)
    return "\n".join(lines) + "\n"


def render_markdown(table: MainTable) -> str:
    cols = _columns(table)
    head = ["Paradigm", "Model", "Seeds"] + [
        f"{d} {metric_label(m) if m else 'Impr.'}" for d, m in cols
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for paradigm, model in table.rows:
        cells = []
        for dataset, metric in cols:
            if metric is None:
                value = table.improvement.get((model, dataset))
                cells.append("–" if value is None else f"{value:+.1f}%")
                continue
            cell = table.cells.get((model, dataset, metric))
            if cell is None:
                cells.append("–")
                continue
            text = _fmt(cell.mean, table.decimals) + (
                f" ± {_fmt(cell.std, table.decimals)}"
                if table.show_std and cell.n_seeds > 1
                else ""
            )
            text = (
                f"**{text}**" if cell.bold else (f"<ins>{text}</ins>" if cell.underline else text)
            )
            text += (
                DIRECTION_MARKS[cell.marks][0] + (SEED_MARK[0] if cell.seed_significant else "")
                if cell.marks in DIRECTION_MARKS
                else (f"<sup>{cell.marks}</sup>" if cell.marks else "")
            )
            cells.append(text)
        name = (
            display_name(model, table.names)
            + "".join(MARKDOWN_MARKS[mark] for mark in table.name_marks(model))
            + (f" ({table.letters[model]})" if table.letters else "")
        )
        lines.append(
            "| "
            + " | ".join([paradigm_title(paradigm), name, table.seeds_text(model)] + cells)
            + " |"
        )
        if table.has_reference_line(model):
            refs = [f"*{v}*" if v else "" for v in _reference_cells(model, table, cols)]
            lines.append(
                "| | *↳ "
                + table.reference_line_name()
                + ", same users/seeds* | | "
                + " | ".join(refs)
                + " |"
            )
    notes = [f"{table.caption} {table.notes_text}".strip()] + [
        f"{MARKDOWN_MARKS[mark]}: {note}" for mark, note in table.notes()
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def table_frame(table: MainTable) -> pd.DataFrame:
    """The main table as CSV rows: one per (model, dataset, metric), missing ones included; `mean`
    is the printed value (the paired sample's), `reference_same_sample` the best baseline on the
    same users and seeds."""
    rows = []
    for paradigm, model in table.rows:
        for dataset in table.datasets:
            for metric in table.metrics:
                cell = table.cells.get((model, dataset, metric))
                rows.append(
                    {
                        "paradigm": paradigm,
                        "model": model,
                        "dataset": dataset,
                        "metric": metric,
                        "mean": cell.mean if cell else np.nan,
                        "std": cell.std if cell else np.nan,
                        "n_seeds": table.seeds.get((model, dataset), 0) if cell else 0,
                        "reference": table.references.get((dataset, metric), ""),
                        "reference_same_sample": cell.reference
                        if cell and cell.reference is not None
                        else np.nan,
                        "paired_diff": cell.diff if cell and cell.diff is not None else np.nan,
                        "best": bool(cell and cell.bold),
                        "second": bool(cell and cell.underline),
                        "marks": cell.marks if cell else "",
                        "seed_test_significant": bool(cell and cell.seed_significant),
                        "improvement_pct": table.improvement.get((model, dataset), np.nan)
                        if metric == table.metrics[0]
                        else np.nan,
                    }
                )
    return pd.DataFrame(rows)


def cost_columns() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(figures every run reports, figures only some runs report: LLM tokens, a row's own), as
    (key, title)."""
    table = [c for c in registered_costs() if c.in_table]
    return [(c.key, c.title) for c in table if c.always], [
        (c.key, c.title) for c in table if not c.always
    ]


def cost_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Mean cost per (dataset, paradigm, model) over seeds; token columns where runs report them."""
    rows = []
    every, some = cost_columns()
    for (dataset, model), rs in by_model(runs).items():
        row = {"dataset": dataset, "paradigm": rs[0].paradigm, "model": model}
        for key, _ in every:
            row[key] = float(np.mean([r.metrics["cost"][key] for r in rs]))
        for key, _ in some:
            values = [r.metrics["cost"][key] for r in rs if key in r.metrics["cost"]]
            row[key] = (
                float(np.mean(values)) * (100 if key == "history_beam_share" else 1)
                if values
                else np.nan
            )
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values(
        ["dataset", "paradigm", "model"],
        key=lambda s: s.map(paradigm_rank) if s.name == "paradigm" else s,
    ).reset_index(drop=True)


def _cost_text(key: str, value: float) -> str:
    return "--" if np.isnan(value) else format_number(key, value, compact=True)


COST_PART_COLUMNS = 6  # figures per part of the LaTeX cost table


def render_cost(frame: pd.DataFrame, style: Style = MARKDOWN) -> str:
    """The cost table: Markdown in one table; LaTeX in parts that fit a paper's text width (the
    costs every run has, then the figures only some rows report, COST_PART_COLUMNS at a time, each
    with the rows that report them)."""
    fmt, names, label, float_ = style.fmt, style.names, style.label or "tab:cost", style.float_
    every, some = cost_columns()
    shown = [c for c in some if frame[c[0]].notna().any()]
    columns = every + shown
    if fmt == "markdown":
        lines = [
            "| Dataset | Paradigm | Model | " + " | ".join(t for _, t in columns) + " |",
            "|" + "---|" * (3 + len(columns)),
        ]
        for r in frame.itertuples():
            lines.append(
                f"| {r.dataset} | {paradigm_title(r.paradigm)} | {display_name(r.model, names)} | "
                + " | ".join(_cost_text(k, getattr(r, k)) for k, _ in columns)
                + " |"
            )
        return "\n".join(lines) + "\n"
    datasets = sorted(frame["dataset"].unique())
    parts = [every] + [
        shown[i : i + COST_PART_COLUMNS] for i in range(0, len(shown), COST_PART_COLUMNS)
    ]
    floats = []
    for number, part in enumerate(parts):
        rows = frame if number == 0 else frame[frame[[k for k, _ in part]].notna().any(axis=1)]
        head = (["Dataset"] if len(datasets) > 1 else []) + ["Model"]
        lines = [
            r"\begin{tabular}{" + "l" * len(head) + "r" * len(part) + "}",
            r"\toprule",
            " & ".join(head + [latex_escape(t) for _, t in part]) + r" \\",
            r"\midrule",
        ]
        for r in rows.itertuples():
            lines.append(
                " & ".join(
                    ([latex_escape(r.dataset)] if len(datasets) > 1 else [])
                    + [latex_escape(display_name(r.model, names))]
                    + [latex_escape(_cost_text(k, getattr(r, k))) for k, _ in part]
                )
                + r" \\"
            )
        lines += [r"\bottomrule", r"\end{tabular}"]
        caption = (
            f"Cost per model on {', '.join(datasets)} (mean over seeds): parameters, training "
            "time, inference time per test user, peak memory."
            if number == 0
            else f"Cost per model, part {number + 1}: "
            + ", ".join(t for _, t in part)
            + " (the rows that report them)."
        )
        floats.append(
            table_float(
                lines,
                latex_escape(caption),
                label if number == 0 else f"{label}-{number + 1}",
                [],
                [r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"],
                float_,
            )
        )
    return "".join(floats)

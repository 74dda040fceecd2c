"""The report stage: comparisons, tables, slices and figures for a set of finished runs.

Two kinds of report. `main` (the main job's runs, default `reports/`):
    comparisons.csv                the main family: every row against the best baseline
    results_table.{tex,md,csv}     the main table
    cost_table.{tex,md,csv}        parameters, train time, inference latency, peak memory, validity
    steer.{tex,md,csv}             steerability by counterfactual requests (the headline): every
                                   model's share of its top-K inside the request's set against its
                                   chance rate (llm4rec.report.steer_table)
    steer_oracle.{tex,md,csv}      oracle requests (from the target: an upper bound), with the list
                                   post-filtered to the set
    slices.{md,csv}                metric by history length, target popularity and the target's
                                   training interactions (new / cold / warm), each bucket tested
                                   against the best baseline
    figures/*.{pdf,png}            metric with CIs, accuracy vs cost, slice bars
    tables.tex (+ tables.pdf)      a document that \\input's every table (.pdf: where pdflatex is)
`ablations` (the variants, their parents at every seed of theirs, including those `main_seeds`
left to this target, and the baselines; default `reports/ablations/`):
    comparisons.csv                the ablation family (every variant against its parent) and the
                                   main family of this report (every row of it against the best
                                   baseline), each corrected on its own
    ablations.{tex,md,csv}         the ablation table
    results_table.{tex,md,csv}     every row of the report (parents at all their seeds), against
                                   the best baseline
    cost_table.{tex,md,csv}        the costs of every run of the report
    steer.{tex,md,csv}             the steer tables (and steer_oracle.*), with each steered row
                                   (`*_steer`: the parent's weights with the request in the prompt)
                                   tested against its parent
    slices.{md,csv}                every row of the report by slice, as in `main` (a variant's
                                   buckets, e.g. on new items, tested against the best baseline)
    tables.tex (+ tables.pdf)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llm4rec import schema
from llm4rec.evaluation.metrics import metric_cutoff
from llm4rec.io import write_text
from llm4rec.report import figures
from llm4rec.report.ablations import ablation_frame, ablation_notes, render_ablations
from llm4rec.report.compare import CompareSpec, by_model, compare_runs
from llm4rec.report.diagnostics import (
    beam_vs_exact_frame,
    diagnostics_frame,
    render_beam_vs_exact,
    render_diagnostics,
)
from llm4rec.report.runs import RunRecord, accuracy_runs
from llm4rec.report.slices import SLICES, render_slices_markdown, slice_frame
from llm4rec.report.steer_table import render_steer, steer_notes, steer_table_frame
from llm4rec.report.tables import (
    Style,
    build_main_table,
    cost_frame,
    latex_escape,
    render_cost,
    render_latex,
    render_markdown,
    table_frame,
)

# A grid's `report` options where it gives none (llm4rec/schema.yaml's defaults).
REPORT_DEFAULTS = schema.defaults("report")


# per report kind: its tables (each as .tex/.md/.csv) and its family of comparisons
REPORT_KINDS = {
    "main": {
        "tables": ("results_table", "cost_table", "steer", "steer_oracle", "diagnostics"),
        "families": ("main",),
    },
    "ablations": {
        "tables": (
            "ablations",
            "results_table",
            "cost_table",
            "steer",
            "steer_oracle",
            "beam_vs_exact",
            "diagnostics",
        ),
        "families": ("ablation", "main"),
    },
}
TABLE_FORMATS = ("tex", "md", "csv")
FIGURE_FORMATS = ("pdf", "png")
NOTES_TEX = "notes.tex"  # \llmrecnotes: every table's protocol and marks, input once per paper


def report_files(out_dir: str | Path, options: dict, kind: str = "main") -> list[Path]:
    """Every file `build_report` always writes (the Snakefile declares exactly these;
    comparisons.csv is the compare rule's, and tables.pdf exists only where pdflatex does)."""
    out_dir, metric = Path(out_dir), options["slice_metric"]
    stems = REPORT_KINDS[kind]["tables"]
    tables = [out_dir / f"{stem}.{ext}" for stem in stems for ext in TABLE_FORMATS]
    slices = [out_dir / "slices.md", out_dir / "slices.csv"]
    documents = [out_dir / "tables.tex", out_dir / NOTES_TEX]
    if kind == "ablations":
        return tables + slices + documents
    plots = [
        out_dir / "figures" / f"{stem}.{ext}"
        for ext in FIGURE_FORMATS
        for stem in (
            figures.ci_stem(metric),
            figures.cost_stem(metric),
            *(figures.slice_stem(s) for s in SLICES),
            figures.LEARNING_CURVES,
        )
    ]
    return tables + slices + documents + plots


@dataclass(frozen=True)
class ReportSpec:
    options: dict = field(default_factory=lambda: dict(REPORT_DEFAULTS))
    label: str = "tab:results"

    def compare_spec(self) -> CompareSpec:
        o = self.options
        return CompareSpec(
            metrics=tuple(o["metrics"]),
            test=o["test"],
            correction=o["correction"],
            alpha=o["alpha"],
            mode=o["comparisons"],
            min_users=o["min_users"],
            rounds=o["randomization_rounds"],
            bootstrap_rounds=o["bootstrap_rounds"],
            seed=o["seed"],
        )


def check_runs(runs: Sequence[RunRecord], metrics: Sequence[str]) -> None:
    if not runs:
        raise ValueError("no finished runs to report on (each run folder needs metrics.json)")
    for r in runs:
        depth = r.metrics.get("evaluation", {}).get("ranking_depth", float("inf"))
        # a cutoff beyond the run's declared ranking depth is a dash in the table, not an error
        missing = [m for m in metrics if m not in r.metrics["test"] and metric_cutoff(m) <= depth]
        if missing:
            raise ValueError(
                f"{r.folder}/metrics.json: no test metric {missing[0]} "
                f"(have: {', '.join(sorted(r.metrics['test']))[:200]})"
            )


def write_comparisons(
    runs: Sequence[RunRecord],
    spec: ReportSpec,
    out_dir: Path,
    kind: str = "main",
    verdicts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """comparisons.csv of a report kind: its families (REPORT_KINDS), each corrected on its own;
    `verdicts` (the ablation report: the main report's comparisons) keep an already tested pair's
    verdict (`compare_runs`)."""
    check_runs(runs, spec.options["metrics"])
    comparisons = compare_runs(runs, spec.compare_spec(), REPORT_KINDS[kind]["families"], verdicts)
    write_text(out_dir / "comparisons.csv", comparisons.to_csv(index=False))
    return comparisons


def compile_latex(tex: Path) -> Path | None:
    """Compile with pdflatex when it exists; raise with the log's tail when it fails."""
    if shutil.which("pdflatex") is None:
        return None
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tex.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tex}: pdflatex failed:\n{proc.stdout[-2000:]}")
    for ext in (".aux", ".log"):
        tex.with_suffix(ext).unlink(missing_ok=True)
    return tex.with_suffix(".pdf")


OVERFULL = re.compile(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)")
MAX_OVERFULL_PT = 2.0


def two_column_preamble() -> list[str]:
    """A two-column paper's preamble: ACM's `sigconf` (RecSys, SIGIR, KDD, WSDM) where acmart is
    installed (`make tex`: Debian's texlive-publishers), else a two-column article of the same
    column and text widths (241 pt, 506 pt)."""
    if (
        shutil.which("kpsewhich")
        and subprocess.run(
            ["kpsewhich", "acmart.cls"], capture_output=True, text=True
        ).stdout.strip()
    ):
        return [
            r"\documentclass[sigconf,nonacm]{acmart}",
            r"\usepackage{booktabs,array}",
            r"\settopmatter{printacmref=false}",
        ]
    return [
        r"\documentclass[twocolumn,10pt]{article}",
        r"\usepackage{booktabs,graphicx,array}",
        r"\usepackage[textwidth=506pt,columnsep=24pt,textheight=650pt]{geometry}",
    ]


def check_fit(out_dir: Path, stems: Sequence[str]) -> dict[str, float]:
    """Compile each table alone in a two-column template (`two_column_preamble`) and raise, naming
    the table, where pdflatex reports an overfull box wider than MAX_OVERFULL_PT; {stem: widest
    overflow} otherwise (nothing without pdflatex)."""
    if shutil.which("pdflatex") is None:
        return {}
    widest = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stem in stems:
            shutil.copy(out_dir / f"{stem}.tex", Path(tmp) / f"{stem}.tex")
            document = Path(tmp) / f"fit_{stem}.tex"
            document.write_text(
                "\n".join(
                    [
                        *two_column_preamble(),
                        r"\begin{document}",
                        r"\title{Fit}",
                        r"\maketitle" if "acmart" in two_column_preamble()[0] else "",
                        r"\hbadness=10000",
                        rf"\input{{{stem}.tex}}",
                        r"Text.",
                        r"\end{document}",
                        "",
                    ]
                )
            )
            proc = subprocess.run(
                ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{out_dir / stem}.tex: pdflatex failed in a two-column template:\n"
                    f"{proc.stdout[-2000:]}"
                )
            log = (Path(tmp) / f"fit_{stem}.log").read_text(errors="replace")
            widest[stem] = max((float(w) for w in OVERFULL.findall(log)), default=0.0)
            if widest[stem] > MAX_OVERFULL_PT:
                raise RuntimeError(
                    f"{out_dir / stem}.tex: overflows a two-column page by {widest[stem]:.1f} pt "
                    f"(more than {MAX_OVERFULL_PT:g} pt; {two_column_preamble()[0]})"
                )
    return widest


def notes_document(notes: dict[str, str]) -> str:
    """notes.tex: `\\llmrecnotes`, one paragraph of protocol and marks per table (label -> text),
    for a paper to place once (the captions stay one or two sentences)."""
    paragraphs = [
        rf"\par\noindent\textbf{{Table~\ref{{{label}}}.}} {latex_escape(text)}"
        for label, text in notes.items()
        if text
    ]
    return (
        "% The protocol and marks behind the tables: \\input{notes.tex} in the preamble, then\n"
        "% \\llmrecnotes where the notes belong (once per document).\n"
        "\\providecommand{\\llmrecnotes}{}\n"
        "\\renewcommand{\\llmrecnotes}{{\\footnotesize\n" + "\n".join(paragraphs) + "\n\\par}}\n"
    )


def build_report(
    runs: Sequence[RunRecord],
    spec: ReportSpec,
    out_dir: str | Path,
    comparisons: pd.DataFrame | None = None,
    kind: str = "main",
    train_flops: dict[tuple[str, str], float] | None = None,
) -> list[Path]:
    """Write every table and figure of a `kind` report (REPORT_KINDS) for `runs` into `out_dir`;
    return the written paths. `train_flops`: (dataset, model) -> the cost model's training FLOPs
    (the learning-curve figure's second axis)."""
    out_dir = Path(out_dir)
    check_runs(runs, spec.options["metrics"])
    if comparisons is None:
        comparisons = write_comparisons(runs, spec, out_dir, kind)
    report = _Report(runs, comparisons, spec, out_dir)
    written = [out_dir / "comparisons.csv"]
    if kind == "main":
        written += _main_tables(report, train_flops)
    else:
        written += [
            *_ablation_tables(report),
            *_results_table(report, label=spec.label.replace("results", "ablations-vs-baseline")),
            *_slices(report)[1],  # the variants by slice (e.g. on new items)
            *_beam_vs_exact(report),
        ]
    written += _diagnostics(report)
    written += report.write("cost_table", _cost_renderings(report))
    written += _steer_table(report)
    written.append(write_text(out_dir / NOTES_TEX, notes_document(report.notes)))
    stems = REPORT_KINDS[kind]["tables"]
    preview = "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage{booktabs,graphicx,array}",
            r"\usepackage[margin=2cm]{geometry}",
            rf"\input{{{NOTES_TEX}}}",
            r"\begin{document}",
            *(rf"\input{{{stem}.tex}}" for stem in stems),
            r"\clearpage",
            r"\llmrecnotes",
            r"\end{document}",
            "",
        ]
    )
    written.append(write_text(out_dir / "tables.tex", preview))
    pdf = compile_latex(out_dir / "tables.tex")
    if pdf is not None:
        written.append(pdf)
    check_fit(out_dir, stems)
    return written


@dataclass
class _Report:
    """One report being written: its runs and comparisons, its options, its folder, and the
    notes its tables leave for the results page (by table label)."""

    runs: Sequence[RunRecord]
    comparisons: pd.DataFrame
    spec: ReportSpec
    out_dir: Path
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> dict[str, str]:
        return self.spec.options.get("display_names") or {}

    @property
    def float_(self) -> str:
        return self.spec.options.get("latex_float", "auto")

    def label(self, stem: str) -> str:
        """The table's LaTeX label: the report's, with `results` replaced by the stem."""
        return self.spec.label.replace("results", stem.replace("_", "-"))

    def style(self, fmt: str, stem: str) -> Style:
        """How the report writes table `stem` in `fmt`: its display names, label and float."""
        return Style(fmt, self.names, self.label(stem), self.float_)

    def write(self, stem: str, renderings: dict[str, str]) -> list[Path]:
        return [
            write_text(self.out_dir / f"{stem}.{ext}", renderings[ext]) for ext in TABLE_FORMATS
        ]


def _diagnostics(report: _Report) -> list[Path]:
    """The comparisons of rows under the minimum sample (llm4rec.report.diagnostics)."""
    frame = diagnostics_frame(report.comparisons)
    return _diagnostic_table(report, frame, render_diagnostics, "diagnostics")


def _beam_vs_exact(report: _Report) -> list[Path]:
    """Each exact-ranking row against its parent's beam (llm4rec.report.diagnostics)."""
    frame = beam_vs_exact_frame(report.runs, report.comparisons)
    return _diagnostic_table(report, frame, render_beam_vs_exact, "beam_vs_exact")


def _diagnostic_table(
    report: _Report, frame: pd.DataFrame, render: Callable[..., str], stem: str
) -> list[Path]:
    """A diagnostics table as .tex, .md and .csv; its Markdown (less the heading) is the
    results page's note under the table's label (results -> beam-vs-exact, diagnostics)."""
    compare = report.spec.compare_spec()
    markdown = render(frame, compare, report.style("markdown", stem))
    report.notes[report.label(stem)] = (
        markdown.split("\n\n", 1)[-1].strip() if not frame.empty else ""
    )
    tex = render(frame, compare, report.style("latex", stem))
    return report.write(stem, {"tex": tex, "md": markdown, "csv": frame.to_csv(index=False)})


def _steer_table(report: _Report) -> list[Path]:
    """Each model with and without the request, and post-filtered (llm4rec.report.steer_table), on
    the template `report.steer_template` at the slice metric's cutoff: steer.* (counterfactual
    requests, the headline; steer.csv holds every figure and test) and steer_oracle.* (oracle
    requests, the upper bound)."""
    o, compare, runs = report.spec.options, report.spec.compare_spec(), report.runs
    template, cutoff = o["steer_template"], metric_cutoff(o["slice_metric"])
    frame = steer_table_frame(runs, template, cutoff, compare)
    wording = next(
        (
            w
            for r in runs
            if (w := (r.metrics.get("steer") or {}).get("templates", {}).get(template))
        ),
        "",
    )
    written = []
    for kind, stem in (("counterfactual", "steer"), ("oracle", "steer_oracle")):
        common = {"template": template, "wording": wording, "kind": kind}
        if not frame.empty:
            tests = int(frame.attrs.get("tests", 0))
            report.notes[report.label(stem)] = steer_notes(
                kind, template, wording, cutoff, compare, tests
            )
        oracle_columns = [c for c in frame.columns if not c.startswith("cf_")]
        written += report.write(
            stem,
            {
                "tex": render_steer(frame, cutoff, compare, report.style("latex", stem), **common),
                "md": render_steer(
                    frame, cutoff, compare, report.style("markdown", stem), **common
                ),
                "csv": (frame if kind == "counterfactual" else frame[oracle_columns]).to_csv(
                    index=False
                ),
            },
        )
    return written


def _cost_renderings(report: _Report) -> dict[str, str]:
    costs = cost_frame(report.runs)
    return {
        "tex": render_cost(costs, report.style("latex", "cost")),
        "md": render_cost(costs, report.style("markdown", "cost")),
        "csv": costs.to_csv(index=False),
    }


def _results_table(report: _Report, label: str | None = None) -> list[Path]:
    """Every run against the best baseline (the main family of `comparisons`)."""
    o = report.spec.options
    table = build_main_table(
        accuracy_runs(report.runs),
        report.comparisons,
        report.spec.compare_spec(),
        show_std=o["show_std"],
        improvement=o["improvement"],
        label=label or report.spec.label,
        names=report.names,
    )
    report.notes[table.label] = table.notes_text
    return report.write(
        "results_table",
        {
            "tex": render_latex(table, report.float_),
            "md": render_markdown(table),
            "csv": table_frame(table).to_csv(index=False),
        },
    )


def _main_tables(
    report: _Report, train_flops: dict[tuple[str, str], float] | None = None
) -> list[Path]:
    """The main table, the slices and the figures."""
    metric, names = report.spec.options["slice_metric"], report.names
    written = _results_table(report)
    slices, slice_files = _slices(report)
    written += slice_files
    fig_dir = report.out_dir / "figures"
    accurate = accuracy_runs(report.runs)
    written += figures.metric_with_ci(accurate, metric, fig_dir, names)
    written += figures.accuracy_vs_cost(accurate, metric, fig_dir, names)
    written += figures.slice_bars(slices, fig_dir, names)
    written += figures.learning_curves(accurate, metric, fig_dir, names, train_flops)
    return written


def _slices(report: _Report) -> tuple[pd.DataFrame, list[Path]]:
    """The slices (every model of the report, each bucket against the best baseline)."""
    o, out_dir = report.spec.options, report.out_dir
    slices = slice_frame(
        accuracy_runs(report.runs),
        o["slice_metric"],
        o["history_buckets"],
        o["cold_items"],
        report.spec.compare_spec(),
    )
    return slices, [
        write_text(out_dir / "slices.md", render_slices_markdown(slices, o.get("display_names"))),
        write_text(out_dir / "slices.csv", slices.to_csv(index=False)),
    ]


def _ablation_tables(report: _Report) -> list[Path]:
    """Every variant against its parent and every row against its declared references (the
    ablation family)."""
    frame, compare = ablation_frame(report.comparisons), report.spec.compare_spec()
    report.notes[report.label("ablations")] = ablation_notes(frame, compare)
    common = {
        "notes": run_notes(report.runs),
        "improving": {r.model for r in report.runs if r.convergence == "still improving"},
    }
    return report.write(
        "ablations",
        {
            "tex": render_ablations(frame, compare, report.style("latex", "ablations"), **common),
            "md": render_ablations(frame, compare, report.style("markdown", "ablations"), **common),
            "csv": frame.to_csv(index=False),
        },
    )


def run_notes(runs: Sequence[RunRecord]) -> dict[str, list[str]]:
    """model -> what its runs' training chose that a table must print (each seed's notes, once;
    with several seeds, each note says its seed)."""
    out: dict[str, list[str]] = {}
    for (_, model), rs in by_model(runs).items():
        found = [(r.seed, n) for r in rs for n in r.notes]
        several = len({seed for seed, _ in found}) > 1
        notes = [f"seed {seed}: {n}" if several else n for seed, n in found]
        if notes:
            out.setdefault(model, []).extend(n for n in notes if n not in out.get(model, []))
    return out

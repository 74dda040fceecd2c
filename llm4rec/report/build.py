"""The report stage: comparisons, tables, slices and figures for a set of finished runs.

Two kinds of report. `main` (the main job's runs, default `reports/`):
    comparisons.csv                the main family: every row against the best baseline
    results_table.{tex,md,csv}     the main table
    cost_table.{tex,md,csv}        parameters, train time, inference latency, peak memory, validity
    steer.{tex,md,csv}             steerability by counterfactual requests (the headline): every
                                   model's share of its top-K inside the request's set against its
                                   chance rate (llm4rec.report.steer)
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

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llm4rec import schema
from llm4rec.evaluation.metrics import metric_cutoff
from llm4rec.io import write_text
from llm4rec.report import figures
from llm4rec.report.ablations import ablation_frame, render_ablations
from llm4rec.report.compare import CompareSpec, by_model, compare_runs
from llm4rec.report.runs import RunRecord, accuracy_runs
from llm4rec.report.slices import SLICES, render_slices_markdown, slice_frame
from llm4rec.report.steer import render_steer, steer_table_frame
from llm4rec.report.tables import (
    build_main_table,
    cost_frame,
    render_cost,
    render_latex,
    render_markdown,
    table_frame,
)

# A grid's `report` options where it gives none (benchmarks/schema.yaml's defaults).
REPORT_DEFAULTS = schema.defaults("report")


# per report kind: its tables (each as .tex/.md/.csv) and its family of comparisons
REPORT_KINDS = {
    "main": {
        "tables": ("results_table", "cost_table", "steer", "steer_oracle"),
        "families": ("main",),
    },
    "ablations": {
        "tables": ("ablations", "results_table", "cost_table", "steer", "steer_oracle"),
        "families": ("ablation", "main"),
    },
}
TABLE_FORMATS = ("tex", "md", "csv")
FIGURE_FORMATS = ("pdf", "png")


def report_files(out_dir: str | Path, options: dict, kind: str = "main") -> list[Path]:
    """Every file `build_report` always writes (the Snakefile declares exactly these;
    comparisons.csv is the compare rule's, and tables.pdf exists only where pdflatex does)."""
    out_dir, metric = Path(out_dir), options["slice_metric"]
    stems = REPORT_KINDS[kind]["tables"]
    tables = [out_dir / f"{stem}.{ext}" for stem in stems for ext in TABLE_FORMATS]
    slices = [out_dir / "slices.md", out_dir / "slices.csv"]
    if kind == "ablations":
        return tables + slices + [out_dir / "tables.tex"]
    plots = [
        out_dir / "figures" / f"{stem}.{ext}"
        for ext in FIGURE_FORMATS
        for stem in (
            figures.ci_stem(metric),
            figures.cost_stem(metric),
            *(figures.slice_stem(s) for s in SLICES),
        )
    ]
    return tables + slices + [out_dir / "tables.tex"] + plots


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
    runs: Sequence[RunRecord], spec: ReportSpec, out_dir: Path, kind: str = "main"
) -> pd.DataFrame:
    check_runs(runs, spec.options["metrics"])
    comparisons = pd.concat(
        [
            compare_runs(runs, spec.compare_spec(), (family,))
            for family in REPORT_KINDS[kind]["families"]
        ],
        ignore_index=True,
    )
    comparisons.attrs["family_size"] = int((comparisons["family"] == "main").sum())
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


def build_report(
    runs: Sequence[RunRecord],
    spec: ReportSpec,
    out_dir: str | Path,
    comparisons: pd.DataFrame | None = None,
    kind: str = "main",
) -> list[Path]:
    """Write every table and figure of a `kind` report (REPORT_KINDS) for `runs` into `out_dir`;
    return the written paths."""
    out_dir = Path(out_dir)
    check_runs(runs, spec.options["metrics"])
    if comparisons is None:
        comparisons = write_comparisons(runs, spec, out_dir, kind)
    if kind == "main":
        written = [out_dir / "comparisons.csv", *_main_tables(runs, comparisons, spec, out_dir)]
    else:
        written = [
            out_dir / "comparisons.csv",
            *_ablation_tables(runs, comparisons, spec, out_dir),
            *_results_table(
                runs,
                comparisons,
                spec,
                out_dir,
                label=spec.label.replace("results", "ablations-vs-baseline"),
            ),
            *_slices(runs, spec, out_dir)[1],  # the variants by slice (e.g. on new items)
        ]
    written += _write_tables(
        out_dir, "cost_table", _cost_renderings(runs, spec, spec.options.get("display_names") or {})
    )
    written += _steer_table(runs, spec, out_dir)
    stems = REPORT_KINDS[kind]["tables"]
    preview = "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage{booktabs}",
            r"\usepackage[margin=2cm]{geometry}",
            r"\begin{document}",
            *(rf"\input{{{stem}.tex}}" for stem in stems),
            r"\end{document}",
            "",
        ]
    )
    written.append(write_text(out_dir / "tables.tex", preview))
    pdf = compile_latex(out_dir / "tables.tex")
    if pdf is not None:
        written.append(pdf)
    return written


def _steer_table(runs: Sequence[RunRecord], spec: ReportSpec, out_dir: Path) -> list[Path]:
    """Each model with and without the request, and post-filtered (llm4rec.report.steer), on the
    template `report.steer_template` at the slice metric's cutoff: steer.* (counterfactual
    requests, the headline; steer.csv holds every figure and test) and steer_oracle.* (oracle
    requests, the upper bound)."""
    o, compare = spec.options, spec.compare_spec()
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
        common = {
            "names": o.get("display_names") or {},
            "template": template,
            "wording": wording,
            "label": spec.label.replace("results", stem.replace("_", "-")),
            "kind": kind,
        }
        oracle_columns = [c for c in frame.columns if not c.startswith("cf_")]
        written += _write_tables(
            out_dir,
            stem,
            {
                "tex": render_steer(frame, cutoff, compare, "latex", **common),
                "md": render_steer(frame, cutoff, compare, "markdown", **common),
                "csv": (frame if kind == "counterfactual" else frame[oracle_columns]).to_csv(
                    index=False
                ),
            },
        )
    return written


def _write_tables(out_dir: Path, stem: str, renderings: dict[str, str]) -> list[Path]:
    return [write_text(out_dir / f"{stem}.{ext}", renderings[ext]) for ext in TABLE_FORMATS]


def _cost_renderings(runs: Sequence[RunRecord], spec: ReportSpec, names: dict) -> dict[str, str]:
    costs = cost_frame(runs)
    label = spec.label.replace("results", "cost")
    return {
        "tex": render_cost(costs, "latex", label=label, names=names),
        "md": render_cost(costs, "markdown", names=names),
        "csv": costs.to_csv(index=False),
    }


def _results_table(
    runs: Sequence[RunRecord],
    comparisons: pd.DataFrame,
    spec: ReportSpec,
    out_dir: Path,
    label: str | None = None,
) -> list[Path]:
    """Every run against the best baseline (the main family of `comparisons`)."""
    o = spec.options
    table = build_main_table(
        accuracy_runs(runs),
        comparisons,
        spec.compare_spec(),
        show_std=o["show_std"],
        improvement=o["improvement"],
        label=label or spec.label,
        names=o.get("display_names") or {},
    )
    return _write_tables(
        out_dir,
        "results_table",
        {
            "tex": render_latex(table),
            "md": render_markdown(table),
            "csv": table_frame(table).to_csv(index=False),
        },
    )


def _main_tables(
    runs: Sequence[RunRecord], comparisons: pd.DataFrame, spec: ReportSpec, out_dir: Path
) -> list[Path]:
    """The main table, the slices and the figures."""
    o = spec.options
    names = o.get("display_names") or {}
    written = _results_table(runs, comparisons, spec, out_dir)
    slices, slice_files = _slices(runs, spec, out_dir)
    written += slice_files
    fig_dir = out_dir / "figures"
    accurate = accuracy_runs(runs)
    written += figures.metric_with_ci(accurate, o["slice_metric"], fig_dir, names)
    written += figures.accuracy_vs_cost(accurate, o["slice_metric"], fig_dir, names)
    written += figures.slice_bars(slices, fig_dir, names)
    return written


def _slices(
    runs: Sequence[RunRecord], spec: ReportSpec, out_dir: Path
) -> tuple[pd.DataFrame, list[Path]]:
    """The slices (every model of the report, each bucket against the best baseline)."""
    o = spec.options
    slices = slice_frame(
        accuracy_runs(runs),
        o["slice_metric"],
        o["history_buckets"],
        o["cold_items"],
        spec.compare_spec(),
    )
    return slices, [
        write_text(out_dir / "slices.md", render_slices_markdown(slices, o.get("display_names"))),
        write_text(out_dir / "slices.csv", slices.to_csv(index=False)),
    ]


def _ablation_tables(
    runs: Sequence[RunRecord], comparisons: pd.DataFrame, spec: ReportSpec, out_dir: Path
) -> list[Path]:
    """Every variant against its parent (the ablation family)."""
    names = spec.options.get("display_names") or {}
    frame = ablation_frame(comparisons)
    label = spec.label.replace("results", "ablations")
    notes = run_notes(runs)
    common = {"names": names, "notes": notes}
    return _write_tables(
        out_dir,
        "ablations",
        {
            "tex": render_ablations(frame, spec.compare_spec(), "latex", label=label, **common),
            "md": render_ablations(frame, spec.compare_spec(), "markdown", **common),
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

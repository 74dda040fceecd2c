"""Tables, marks, slices, figures and LaTeX compilation on constructed runs with known outcomes."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from llm4rec.io import write_json
from llm4rec.report.build import REPORT_DEFAULTS, ReportSpec, build_report, check_runs, report_files
from llm4rec.report.compare import CompareSpec, ComparisonError, compare_runs
from llm4rec.report.tables import (
    Style,
    build_main_table,
    display_name,
    render_latex,
    render_markdown,
)

from .helpers import runs_from_results
from .helpers.runs import make_run

N_USERS = 300


@pytest.fixture
def runs_dir(tmp_path):
    """ml-a: best baseline bpr (0.30), weaker baseline mostpop (0.10), llm_good clearly better
    (0.60), llm_same equal to bpr. ml-b: same but llm_good missing."""
    rng = np.random.default_rng(0)
    base = (rng.random(N_USERS) < 0.30).astype(float)
    for dataset in ("ml-a", "ml-b"):
        for seed in (0, 1):
            make_run(tmp_path, dataset, "bpr", "baseline", seed, base)
            make_run(
                tmp_path,
                dataset,
                "mostpop",
                "baseline",
                seed,
                (rng.random(N_USERS) < 0.10).astype(float),
            )
            make_run(tmp_path, dataset, "llm_same", "text_prompted", seed, np.roll(base, 1))
            if dataset == "ml-a":
                make_run(
                    tmp_path,
                    dataset,
                    "llm_good",
                    "text_prompted",
                    seed,
                    np.maximum(base, (rng.random(N_USERS) < 0.45)),
                )
    return tmp_path


def spec(**overrides):
    return CompareSpec(metrics=("hr_at_10", "ndcg_at_10"), **overrides)


def test_marks_on_constructed_table(runs_dir):
    runs = runs_from_results(runs_dir)
    comparisons = compare_runs(runs, spec())
    # family: ml-a has 3 non-reference models, ml-b 2, times 2 metrics
    assert len(comparisons) == 10 and comparisons.attrs["family_size"] == 10
    assert set(comparisons["reference"]) == {"bpr"}
    sig = comparisons[comparisons["significant"]]
    assert set(zip(sig["system"], sig["dataset"], strict=True)) == {
        ("llm_good", "ml-a"),
        ("mostpop", "ml-a"),
        ("mostpop", "ml-b"),
    }
    table = build_main_table(runs, comparisons, spec())
    good = table.cells[("llm_good", "ml-a", "hr_at_10")]
    assert good.bold and not good.underline and good.marks == "better"
    for c in sig.itertuples():  # every mark says which way: MostPop is significantly worse than BPR
        assert table.cells[(c.system, c.dataset, c.metric)].marks == (
            "better" if c.diff > 0 else "worse"
        )
    assert table.cells[("mostpop", "ml-b", "hr_at_10")].marks == "worse"
    bpr_a = table.cells[("bpr", "ml-a", "hr_at_10")]
    assert bpr_a.underline and not bpr_a.bold and bpr_a.marks == ""
    same = table.cells[("llm_same", "ml-a", "hr_at_10")]
    assert same.underline and same.marks == ""  # ties with bpr: same value, same mark
    assert (
        table.cells[("bpr", "ml-b", "hr_at_10")].bold
        and table.cells[("llm_same", "ml-b", "hr_at_10")].bold
    )
    expected_impr = 100 * (good.mean - bpr_a.mean) / bpr_a.mean
    assert table.improvement[("llm_good", "ml-a")] == pytest.approx(expected_impr)
    assert table.rows == [
        ("baseline", "bpr"),
        ("baseline", "mostpop"),
        ("text_prompted", "llm_good"),
        ("text_prompted", "llm_same"),
    ]

    latex = render_latex(table)
    good_row = next(line for line in latex.splitlines() if line.startswith("llm\\_good"))
    # name, seeds, value, mark
    assert good_row.startswith(rf"llm\_good & 2 & \textbf{{{good.mean:.4f}}}$^{{\uparrow")
    assert good_row.rstrip().endswith(r"-- & -- & -- \\")  # missing on ml-b: dashes (incl. Impr.)
    assert (
        r"\par\smallskip{\footnotesize --: not run on this dataset, or the cutoff is beyond the "
        r"model's ranking depth.\par}" in latex
    )
    # the caption is one sentence; the family, test and alpha are the table's notes (notes.tex)
    assert "Holm-Bonferroni correction over the 10 comparisons" not in latex
    assert (
        "Holm-Bonferroni correction over the 10 comparisons of this table's family"
        in table.notes_text
        and "α = 0.05" in table.notes_text
    )
    assert r"\textit{Text-prompted}" in latex and r"\cmidrule(lr){3-5}" in latex
    markdown = render_markdown(table)
    assert (
        f"**{good.mean:.4f}**↑" in markdown
        and "–: not run on this dataset, or the cutoff" in markdown
    )
    assert "↑ / ↓: significantly better / worse than the best baseline over users" in markdown
    assert table.notes_text in markdown


def test_the_best_baseline_is_chosen_on_validation_not_test(tmp_path):
    """MostPop is the better baseline on validation, BPR on test: MostPop is the reference."""
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        make_run(
            tmp_path,
            "ml-a",
            "bpr",
            "baseline",
            seed,
            (rng.random(N_USERS) < 0.30).astype(float),
            valid=0.2,
        )
        make_run(
            tmp_path,
            "ml-a",
            "mostpop",
            "baseline",
            seed,
            (rng.random(N_USERS) < 0.10).astype(float),
            valid=0.25,
        )
        make_run(
            tmp_path,
            "ml-a",
            "llm",
            "text_prompted",
            seed,
            (rng.random(N_USERS) < 0.20).astype(float),
        )
    runs = runs_from_results(tmp_path)
    comparisons = compare_runs(runs, spec())
    assert set(comparisons["reference"]) == {"mostpop"}
    table = build_main_table(runs, comparisons, spec())
    assert ("mostpop", "ml-a") not in table.improvement and ("bpr", "ml-a") in table.improvement
    assert "the best baseline chosen on validation" in table.caption


def test_all_pairs_letters(runs_dir):
    runs = [r for r in runs_from_results(runs_dir) if r.dataset == "ml-a"]
    comparisons = compare_runs(runs, spec(mode="all_pairs", correction="bonferroni"))
    assert len(comparisons) == 12  # 4 models -> 6 pairs x 2 metrics
    table = build_main_table(runs, comparisons, spec(mode="all_pairs"))
    assert table.letters == {"bpr": "a", "mostpop": "b", "llm_good": "c", "llm_same": "d"}
    assert table.cells[("llm_good", "ml-a", "hr_at_10")].marks == "abd"
    assert table.cells[("bpr", "ml-a", "hr_at_10")].marks == "b"
    assert table.cells[("mostpop", "ml-a", "hr_at_10")].marks == ""


def test_mismatched_runs_are_refused_with_both_names(runs_dir):
    make_run(runs_dir, "ml-a", "llm_same", "text_prompted", 0, np.zeros(N_USERS), checksum="other")
    with pytest.raises(
        ComparisonError,
        match=r"llm_same/ml-a/seed0 .* and bpr/ml-a/seed0 .* were evaluated on different splits",
    ):
        compare_runs(runs_from_results(runs_dir), spec())
    make_run(
        runs_dir,
        "ml-a",
        "llm_same",
        "text_prompted",
        0,
        np.zeros(N_USERS),
        users=[f"v{i}" for i in range(N_USERS)],
    )
    with pytest.raises(
        ComparisonError,
        match=r"llm_same/ml-a/seed0 and bpr/ml-a/seed0 have different test users, neither a sample",
    ):
        compare_runs(runs_from_results(runs_dir), spec())


def test_a_model_scored_on_a_user_sample_is_paired_on_that_sample_and_starred(runs_dir):
    """llm_sample: one seed, the first 120 users only, no @20 metrics (ranking depth 10). Its
    comparison with bpr is the paired t-test on those 120 users, bpr averaged over the common
    seed."""
    from scipy import stats

    rng = np.random.default_rng(5)
    sample = [f"u{i}" for i in range(0, N_USERS, 2)][:120]
    hits = (rng.random(120) < 0.5).astype(float)
    make_run(
        runs_dir,
        "ml-a",
        "llm_sample",
        "text_prompted",
        0,
        hits,
        users=sample,
        metrics=("hr_at_10", "ndcg_at_10"),
        evaluation={"n_users": {"test": 120}, "all_users": {"test": N_USERS}, "ranking_depth": 10},
    )
    runs = [r for r in runs_from_results(runs_dir) if r.dataset == "ml-a"]
    # hr_at_20 is beyond llm_sample's ranking depth: allowed
    check_runs(runs, ["hr_at_10", "hr_at_20"])
    make_run(
        runs_dir, "ml-a", "llm_short", "text_prompted", 0, hits, users=sample, metrics=("hr_at_10",)
    )
    with pytest.raises(ValueError, match=r"llm_short/seed0/metrics.json: no test metric hr_at_20"):
        # no declared depth: a missing metric
        check_runs(runs_from_results(runs_dir), ["hr_at_10", "hr_at_20"])
    (runs_dir / "ml-a" / "llm_short").rename(runs_dir / "removed")
    comparisons = compare_runs(
        runs, CompareSpec(metrics=("hr_at_10", "hr_at_20"), correction="none", test="t")
    )
    row = comparisons[(comparisons.system == "llm_sample")]
    # no hr_at_20: not compared
    assert list(row.metric) == ["hr_at_10"] and int(row.n_users.iloc[0]) == 120
    bpr = (
        next(r for r in runs if r.model == "bpr" and r.seed == 0)
        .per_user()
        .set_index("user_id")
        .loc[sample, "hr_at_10"]
    )
    assert float(row.p_value.iloc[0]) == pytest.approx(
        stats.ttest_rel(hits, bpr.to_numpy()).pvalue, rel=1e-9
    )
    table = build_main_table(
        runs, comparisons, CompareSpec(metrics=("hr_at_10", "hr_at_20"), correction="none")
    )
    assert ("llm_sample", "ml-a", "hr_at_20") not in table.cells and table.samples == {
        ("llm_sample", "ml-a"): (120, N_USERS)
    }
    latex, markdown = render_latex(table), render_markdown(table)
    assert r"llm\_sample$^{*}$ &" in latex and "llm_sample\\* |" in markdown
    assert f"llm_sample: 120 of {N_USERS} on ml-a" in markdown
    assert r"\footnotesize $^{*}$: scored on a seeded uniform sample of the test users" in latex
    # its numbers are the paired sample's: its seed, its users; the line below it is BPR on the same
    # seed and users
    assert table.seeds[("llm_sample", "ml-a")] == 1 and table.seeds[("bpr", "ml-a")] == 2
    cell = table.cells[("llm_sample", "ml-a", "hr_at_10")]
    assert cell.mean == pytest.approx(hits.mean()) and cell.reference == pytest.approx(bpr.mean())
    assert cell.diff == pytest.approx(hits.mean() - bpr.mean())
    # the full-sample rows get no second line
    assert table.cells[("bpr", "ml-a", "hr_at_10")].reference is None
    # a row on a sample is not ranked: no bold, no underline, no Impr. (its italic line says what
    # the best baseline scored on its users)
    assert not (cell.bold or cell.underline) and ("llm_sample", "ml-a") not in table.improvement
    assert rf"\quad\textit{{BPR, same users/seeds}} &  & \textit{{{bpr.mean():.4f}}} & " in latex
    assert f"| | *↳ BPR, same users/seeds* | | *{bpr.mean():.4f}* |" in markdown
    assert (
        "the italic line below gives the best baseline's value on the same users and seeds"
        in table.notes_text
    )
    assert "seed 0 only" not in table.notes_text  # the Seeds column says it


def test_full_report_files_and_latex_compiles(runs_dir, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip(
            "pdflatex not installed (make test installs texlive-latex-recommended when run as root)"
        )
    out = tmp_path / "reports"
    options = REPORT_DEFAULTS | {"metrics": ["hr_at_10", "ndcg_at_10"], "show_std": True}
    written = build_report(runs_from_results(runs_dir), ReportSpec(options), out)
    names = {p.relative_to(out).as_posix() for p in written}
    assert {
        "results_table.tex",
        "results_table.md",
        "results_table.csv",
        "cost_table.tex",
        "slices.csv",
        "figures/ndcg_at_10_ci.png",
        "figures/slices_target_popularity.pdf",
        "tables.pdf",
    } <= names
    assert all(p.stat().st_size > 0 for p in written)
    # an independent compile of a minimal document that \input's each table
    for table in ("results_table.tex", "cost_table.tex"):
        doc = out / f"check_{table}"
        doc.write_text(
            "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\\input{"
            + table
            + "}\\end{document}\n"
        )
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout[-1500:]
    slices = pd.read_csv(out / "slices.csv")
    assert set(slices["slice"]) == {"history_length", "target_popularity", "target_interactions"}
    assert set(slices.loc[slices["slice"] == "target_interactions", "bucket"]) == {"cold (1–5)"}
    assert set(slices.loc[slices["slice"] == "target_popularity", "bucket"]) == {
        "head",
        "torso",
        "tail",
    }
    assert slices.groupby(["dataset", "model", "slice"])["n_users"].sum().eq(N_USERS).all()


def test_slices_by_target_interactions_with_a_test_per_bucket(tmp_path):
    """A text model that wins only where the target item is new or cold: its cold and new buckets
    are marked better than the best baseline (scipy's paired t-test on those users, Holm over
    every test of the slices by hand), its warm bucket is not; counts by hand."""
    from scipy import stats

    from llm4rec.report.slices import render_slices_markdown, slice_frame

    rng = np.random.default_rng(3)
    popularity = np.repeat([0, 3, 50], 100)  # new, cold (<= 5), warm
    warm = popularity > 5
    bpr = np.where(warm, rng.random(N_USERS) < 0.5, 0).astype(float)
    text = np.where(warm, bpr, rng.random(N_USERS) < 0.4).astype(float)
    text[warm] = np.roll(bpr[warm], 7)  # warm: the same hit rate, other users
    for model, paradigm, hits, valid in (
        ("bpr", "baseline", bpr, 0.3),
        ("mostpop", "baseline", np.zeros(N_USERS), 0.1),
        ("text", "text_prompted", text, 0.2),
    ):
        make_run(tmp_path, "ml-a", model, paradigm, 0, hits, valid=valid, popularity=popularity)
    frame = slice_frame(runs_from_results(tmp_path), "ndcg_at_10", 4, cold_items=5, spec=spec())
    cold = frame[frame["slice"] == "target_interactions"].set_index(["model", "bucket"])
    assert list(dict.fromkeys(cold.index.get_level_values("bucket"))) == [
        "new (0)",
        "cold (1–5)",
        "warm (>5)",
    ]
    assert (cold["n_users"] == 100).all()
    assert cold.loc[("text", "cold (1–5)"), "mean"] == pytest.approx(text[100:200].mean())
    expected = {}
    for name, rows in (("new (0)", slice(0, 100)), ("cold (1–5)", slice(100, 200))):
        expected[name] = stats.ttest_rel(text[rows], bpr[rows]).pvalue
        assert cold.loc[("text", name), "p_value"] == pytest.approx(expected[name])
    assert cold.loc[("bpr", "warm (>5)"), "reference"] == "bpr"
    assert np.isnan(cold.loc[("bpr", "warm (>5)"), "p_value"])  # the reference itself
    # Holm over every test of the frame, by hand
    tested = frame.dropna(subset=["p_value"]).reset_index(drop=True)
    order = np.argsort(tested["p_value"].to_numpy())
    m, running, holm = len(tested), 0.0, np.empty(len(tested))
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * tested["p_value"][i]))
        holm[i] = running
    np.testing.assert_allclose(tested["p_adjusted"], holm)
    assert cold.loc[("text", "new (0)"), "direction"] == "better"
    assert cold.loc[("text", "cold (1–5)"), "direction"] == "better"
    assert cold.loc[("text", "warm (>5)"), "direction"] == ""
    assert cold.loc[("mostpop", "warm (>5)"), "direction"] == "worse"
    markdown = render_slices_markdown(frame)
    section = markdown.split("ndcg_at_10 by target interactions")[1]
    row = next(line for line in section.splitlines() if line.startswith("| text |"))
    assert row == (
        f"| text | {text[:100].mean():.4f}↑ | {text[100:200].mean():.4f}↑ | "
        f"{text[200:].mean():.4f} |"
    )
    assert "better / worse than the best baseline (BPR" in markdown


def test_history_buckets_partition_users_with_disjoint_labels():
    from llm4rec.report.slices import history_buckets

    lengths = pd.Series([18, 20, 31, 32, 40, 62, 63, 100, 146, 647])
    buckets, labels = history_buckets(lengths, 4)
    assert buckets.value_counts().sum() == len(lengths)
    for label in labels:  # every length falls inside its bucket's printed range
        low, high = map(int, label.split("–"))
        assert lengths[buckets == label].between(low, high).all()
    highs = [int(label.split("–")[1]) for label in labels]
    lows = [int(label.split("–")[0]) for label in labels]
    assert all(h < lo for h, lo in zip(highs[:-1], lows[1:], strict=True))  # ranges do not overlap


def test_a_model_family_outside_the_registry_still_renders(runs_dir, tmp_path):
    """A sixth family (no title or colour): its key as title, grey, rows after the known ones."""
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        make_run(
            runs_dir,
            "ml-a",
            "graph_llm",
            "graph_llm",
            seed,
            (rng.random(N_USERS) < 0.2).astype(float),
        )
    out = tmp_path / "reports"
    options = REPORT_DEFAULTS | {"metrics": ["hr_at_10", "ndcg_at_10"]}
    written = build_report(runs_from_results(runs_dir), ReportSpec(options), out)
    # the Snakefile's list is exactly what the report writes (plus comparisons.csv and the PDF)
    assert set(report_files(out, options)) == set(written) - {
        out / "comparisons.csv",
        out / "tables.pdf",
    }
    # display names from the registry in the paper tables; model keys in the CSV
    assert "MostPop" in (out / "results_table.tex").read_text() and "mostpop" in set(
        pd.read_csv(out / "results_table.csv")["model"]
    )
    table = (out / "results_table.md").read_text().splitlines()
    rows = [
        line.split(" | ")[0].lstrip("| ")
        for line in table
        if line.startswith("| ") and "---" not in line
    ][1:]
    assert rows[-1] == "graph_llm" and rows.index("graph_llm") > rows.index("Text-prompted")
    assert (out / "figures" / "ndcg_at_10_ci.png").stat().st_size > 0


def test_a_model_family_declares_its_own_cost_figures(runs_dir, tmp_path, monkeypatch):
    """A figure a family declares in its registry entry (here text perplexity after training) is
    checked in the runner, logged to MLflow, and gets a cost-table and summary column."""
    import dataclasses

    from llm4rec import models
    from llm4rec.costs import TEXT_RETENTION_COSTS
    from llm4rec.io import read_json
    from llm4rec.report.summary import aggregate, collect, markdown
    from llm4rec.report.tables import cost_frame, render_cost
    from llm4rec.runner import declared_costs
    from llm4rec.tracking import run_metrics

    ppl = TEXT_RETENTION_COSTS[1]  # the LLM families' text perplexity after training
    spec = dataclasses.replace(models.MODELS["text_prompted"], name="llm_good", costs=(ppl,))
    monkeypatch.setitem(models.MODELS, "llm_good", spec)
    assert declared_costs("llm_good", {"costs": {"text_ppl_after": 41.5}}) == {
        "text_ppl_after": 41.5
    }
    with pytest.raises(
        ValueError,
        match=r"llm_good: fit reports cost 'ppl', which its ModelSpec.costs does not declare "
        r"\(declared: text_ppl_after\)",
    ):
        declared_costs("llm_good", {"costs": {"ppl": 1.0}})
    folder = runs_dir / "ml-a" / "llm_good" / "seed0"
    metrics = read_json(folder / "metrics.json")
    metrics["cost"] = metrics["cost"] | {"text_ppl_after": 41.5}
    write_json(folder / "metrics.json", metrics)
    runs = runs_from_results(runs_dir)
    frame = cost_frame(runs)
    assert frame.set_index(["dataset", "model"]).loc[("ml-a", "llm_good"), "text_ppl_after"] == 41.5
    assert np.isnan(frame.set_index(["dataset", "model"]).loc[("ml-a", "bpr"), "text_ppl_after"])
    assert "| 41.50 |" in render_cost(frame)  # the declared cost's own decimals
    latex = render_cost(frame, Style("latex"))
    assert "Text ppl after" in render_cost(frame)
    # LaTeX: a part of its own for the figures only some rows report, with those rows only
    assert "Cost per model, part 2: Text ppl after (the rows that report them)" in latex
    part = latex.split("\\sbox{")[-1]  # the last float: part 2
    assert "Text-prompted (LoRA)" in part and "BPR" not in part  # llm_good: its registry title
    assert run_metrics(metrics)["text_ppl_after"] == 41.5
    long = collect([folder / "metrics.json"])
    assert long.loc[long["metric"] == "text_ppl_after", "value"].tolist() == [41.5]
    summary = markdown(aggregate(long), columns=("text_ppl_after",))
    assert "| 41.50 |" in summary  # the summary prints it as the cost table does


def test_one_number_format_for_the_summary_and_the_tables():
    from llm4rec.report.tables import format_number

    assert format_number("ndcg_at_10", 0.123456) == "0.1235"
    assert format_number("ndcg_at_10", 0.123456, 0.01) == "0.1235 ± 0.0100"
    assert format_number("avg_popularity_at_20", 123.456, 1.0) == "123.5 ± 1.0"
    assert format_number("train_time_s", 12.34, 0.5) == "12.3 ± 0.5"  # a cost's declared decimals
    assert format_number("inference_ms_per_user", 1.2345) == "1.23"
    assert format_number("parameters_total", 1234567.0, 3.0) == "1,234,567"  # a count: no std
    assert format_number("parameters_total", 1234567.0, compact=True) == "1.23M"
    assert format_number("train_tokens", 99_999.0, compact=True) == "99,999"


def _words(pdf) -> list[tuple[float, float, float, str]]:
    """(xMin, xMax, yMin, text) of every word on the PDF's first page, as pdftotext places them."""
    import re

    html = subprocess.run(
        ["pdftotext", "-bbox", "-f", "1", "-l", "1", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        (float(a), float(c), float(b), t)
        for a, b, c, t in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>',
            html,
        )
    ]


def test_caption_and_footnotes_stay_within_the_tables_width(runs_dir, tmp_path):
    """Compiled with pdflatex, the caption above and the footnotes below wrap within the tabular's
    own width (word boxes from the PDF), not the page's text width; single-seed cells print no
    '± 0.0000'."""
    if shutil.which("pdflatex") is None or shutil.which("pdftotext") is None:
        pytest.skip("pdflatex / pdftotext not installed (make test installs them when run as root)")
    rng = np.random.default_rng(2)
    make_run(
        runs_dir,
        "ml-a",
        "one_seed_llm",
        "text_prompted",
        0,
        (rng.random(N_USERS) < 0.2).astype(float),
    )
    out = tmp_path / "reports"
    options = REPORT_DEFAULTS | {
        "metrics": ["ndcg_at_10"],
        "show_std": True,
        "improvement": False,
        "display_names": {"bpr": "BPR-MF"},
    }
    build_report(runs_from_results(runs_dir), ReportSpec(options), out)
    tex = (out / "results_table.tex").read_text()
    # display names
    assert "BPR-MF" in tex and "MostPop" in tex and "mostpop" not in tex.replace(r"\label", "")
    one_seed = next(line for line in tex.splitlines() if line.startswith("one\\_seed\\_llm"))
    assert r"\pm" not in one_seed and r"\pm" in next(
        line for line in tex.splitlines() if line.startswith("BPR-MF")
    )
    md_row = next(
        line
        for line in (out / "results_table.md").read_text().splitlines()
        if "one_seed_llm" in line
    )
    assert "±" not in md_row and "±" in next(
        line for line in (out / "results_table.md").read_text().splitlines() if "MostPop" in line
    )
    # the page is much wider than this table: a caption set to \linewidth would show it
    doc = out / "width.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=2cm]{geometry}\\begin{document}"
        "\\input{results_table.tex}\\end{document}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-1500:]
    words = _words(doc.with_suffix(".pdf"))
    top = next(y for x0, x1, y, t in words if t == "Model")
    notes = min(y for x0, x1, y, t in words if y > top and t in ("–:", "--:", "*:"))
    table = [w for w in words if top <= w[2] < notes]
    left, right = min(w[0] for w in table), max(w[1] for w in table)
    outside = [w for w in words if not top <= w[2] < notes]
    assert len(outside) > 25  # the caption and the footnotes
    # the tabular's box begins and ends \tabcolsep (6pt) outside its text, plus a centred
    # column's slack
    tolerance = 12.0
    assert all(left - tolerance <= x0 and x1 <= right + tolerance for x0, x1, _, _ in outside), (
        left,
        right,
        [w for w in outside if not (left - tolerance <= w[0] and w[1] <= right + tolerance)][:5],
    )
    # far narrower than the text width (482pt): a caption set to it would fail above
    assert right - left < 0.7 * 482


def test_cost_figure_labels_every_model_inside_the_figure_without_overlap(
    runs_dir, tmp_path, monkeypatch
):
    """Twelve models at nearly the same cost and accuracy (as BPR and LightGCN are): every model is
    named once, no two labels overlap, and every label lies inside the saved figure."""
    from matplotlib.text import Text

    from llm4rec.report import figures

    rng = np.random.default_rng(3)
    extra = [f"llm_variant_{i}" for i in range(8)]
    for i, model in enumerate(extra):
        make_run(
            runs_dir,
            "ml-a",
            model,
            ["text_prompted", "cf_injected", "semantic_id", "moe_expert"][i % 4],
            0,
            (rng.random(N_USERS) < 0.30).astype(float),
        )
    drawn = {}

    def keep(fig, out_dir, stem):
        fig.canvas.draw()
        drawn["fig"] = fig
        return []

    monkeypatch.setattr(figures, "save", keep)
    runs = [r for r in runs_from_results(runs_dir) if r.dataset == "ml-a"]
    figures.accuracy_vs_cost(runs, "ndcg_at_10", tmp_path)
    fig = drawn["fig"]
    renderer = fig.canvas.get_renderer()
    # what bbox_inches="tight" keeps (pixels)
    saved = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    ticks = {
        id(t)
        for ax in fig.axes
        for t in ax.get_xticklabels(which="both") + ax.get_yticklabels(which="both")
    }
    texts = [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in ticks
    ]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    models = {r.model for r in runs}
    for model in models:  # every model named exactly once (legend entries: "<name> [<paradigm>]")
        name = display_name(model)
        assert sum(text.startswith(name + " [") or text == name for text, _ in boxes) == 1, model
    for text, box in boxes:
        assert (
            saved.x0 - 1 <= box.x0
            and box.x1 <= saved.x1 + 1
            and saved.y0 - 1 <= box.y0
            and box.y1 <= saved.y1 + 1
        ), text
        # not cut off at the canvas edge either
        assert fig.bbox.x0 - 1 <= box.x0 and box.x1 <= fig.bbox.x1 + 1, text
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            assert not box_a.overlaps(box_b), (a, b)


def test_bold_never_crosses_samples(tmp_path):
    """Hand-built: BPR (two seeds) beats `llm` (seed 0 only) on their full-sample means, 0.65 vs
    0.60, but on the seed both ran BPR scores 0.50: the table prints 0.60 against BPR's 0.50 on the
    same seed (the italic line). The paired difference (+0.1) is the column's largest, and before
    issue 41 it made `llm` bold with Impr. +20%: a row on one seed ranked against rows on two.
    Now a row not on the best baseline's own users and seeds is not ranked: BPR is bold, `llm` is
    neither bold nor underlined, and has no Impr."""
    users = [f"u{i}" for i in range(10)]
    make_run(
        tmp_path,
        "ml-a",
        "bpr",
        "baseline",
        0,
        np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0.0]),
        users=users,
    )
    make_run(
        tmp_path,
        "ml-a",
        "bpr",
        "baseline",
        1,
        np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0.0]),
        users=users,
    )
    make_run(
        tmp_path,
        "ml-a",
        "llm",
        "text_prompted",
        0,
        np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0.0]),
        users=users,
    )
    runs = runs_from_results(tmp_path)
    comparisons = compare_runs(runs, spec(correction="none", min_users=1))
    row = comparisons[(comparisons.metric == "hr_at_10")].iloc[0]
    assert (row.system, row.reference, row.mean_system, row.mean_reference, row.seeds) == (
        "llm",
        "bpr",
        0.6,
        0.5,
        "0",
    )
    table = build_main_table(runs, comparisons, spec(correction="none", min_users=1))
    llm, bpr = table.cells[("llm", "ml-a", "hr_at_10")], table.cells[("bpr", "ml-a", "hr_at_10")]
    assert bpr.mean == pytest.approx(0.65)  # the reference's own row: its full sample
    assert (llm.mean, llm.reference, llm.diff) == (
        pytest.approx(0.6),
        pytest.approx(0.5),
        pytest.approx(0.1),
    )
    assert not llm.bold and not llm.underline and bpr.bold  # llm is on another sample
    assert ("llm", "ml-a") not in table.improvement
    assert table.seeds == {("llm", "ml-a"): 1, ("bpr", "ml-a"): 2}
    markdown = render_markdown(table)
    assert "| Text-prompted | llm | 1 | 0.6000 | 0.6000 |" in markdown  # no Impr. column at all
    assert "| | *↳ BPR, same users/seeds* | | *0.5000* | *0.5000* |" in markdown
    assert "a row on a user sample is not ranked" in table.notes_text


def test_a_seed_level_test_and_the_per_user_test_disagree_on_three_seeds(tmp_path):
    """Three seeds, 1,000 users. Per user, `llm` beats `bpr` by the seed's shift d_s plus a small
    user effect e_u (sd 0.05): over users the per-user test is overwhelming; but the per-seed mean
    differences (+0.06, +0.06, +0.01 plus mean(e)) vary so much with the seed that Welch's t-test
    over seed means, which counts training variance, is not significant at 0.05 (t = 2.6 with 2
    degrees of freedom: bpr's seed means are equal, so all of the variance is llm's)."""
    from scipy import stats

    rng = np.random.default_rng(11)
    n = 1000
    base, effect = rng.random(n), rng.normal(0, 0.05, n)
    shifts = (0.06, 0.06, 0.01)
    for seed, shift in enumerate(shifts):
        make_run(tmp_path, "ml-a", "bpr", "baseline", seed, base)
        make_run(tmp_path, "ml-a", "llm", "text_prompted", seed, base + shift + effect)
    comparisons = compare_runs(runs_from_results(tmp_path), spec(correction="none"))
    row = comparisons[comparisons.metric == "hr_at_10"].iloc[0]
    # by hand: the per-seed mean differences, their t statistic and two-sided p with n - 1 = 2
    # degrees of freedom
    d = np.array(shifts) + effect.mean()
    t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    assert t == pytest.approx(2.6, abs=0.2)
    assert row.p_seed == pytest.approx(2 * stats.t.sf(abs(t), 2), rel=1e-9)
    assert row.p_seed == pytest.approx(
        stats.ttest_ind(base.mean() + d, np.full(3, base.mean()), equal_var=False).pvalue,
        rel=1e-9,
    )
    assert row.p_seed > 0.05 and not row.significant_seed
    # over users: each user's difference averaged over seeds, mean(d_s) + e_u, users as the unit
    per_user = np.mean(shifts) + effect
    assert (
        row.p_value == pytest.approx(stats.ttest_1samp(per_user, 0).pvalue, rel=1e-6)
        and row.p_value < 1e-100
    )
    assert row.significant and row.n_seeds == 3 and row.seeds == "0 1 2"
    table = build_main_table(runs_from_results(tmp_path), comparisons, spec(correction="none"))
    cell = table.cells[("llm", "ml-a", "hr_at_10")]
    assert cell.marks == "better" and not cell.seed_significant
    assert "0.5" in render_markdown(table) and "↑‡" not in render_markdown(table)
    assert "also significant over seeds (Welch's t-test over per-seed means" in table.notes_text


def test_variants_are_compared_with_their_declared_parent_in_their_own_family(tmp_path):
    """idiomoe_entangled (parent idiomoe) and cf_e4srec_permuted (parent cf_e4srec), per the
    registry; the ablation family is corrected on its own (Holm over its p-values only) and is not
    in the main table's count."""
    from llm4rec.models import MODELS
    from llm4rec.report.ablations import ablation_frame, render_ablations
    from llm4rec.stats import correct

    rng = np.random.default_rng(3)
    for seed in (0, 1):
        make_run(
            tmp_path, "ml-a", "bpr", "baseline", seed, (rng.random(N_USERS) < 0.3).astype(float)
        )
        make_run(
            tmp_path,
            "ml-a",
            "idiomoe",
            "moe_expert",
            seed,
            (rng.random(N_USERS) < 0.3).astype(float),
        )
        make_run(
            tmp_path,
            "ml-a",
            "idiomoe_entangled",
            "moe_expert",
            seed,
            (rng.random(N_USERS) < 0.1).astype(float),
        )
    make_run(
        tmp_path, "ml-a", "cf_e4srec", "cf_injected", 0, (rng.random(N_USERS) < 0.3).astype(float)
    )
    make_run(
        tmp_path,
        "ml-a",
        "cf_e4srec_permuted",
        "cf_injected",
        0,
        (rng.random(N_USERS) < 0.28).astype(float),
    )
    assert (
        MODELS["idiomoe_entangled"].parent == "idiomoe"
        and MODELS["cf_e4srec_permuted"].parent == "cf_e4srec"
    )
    runs = runs_from_results(tmp_path)
    comparisons = compare_runs(runs, spec())
    ablation = comparisons[comparisons.family == "ablation"]
    assert sorted(set(zip(ablation.system, ablation.reference, strict=True))) == [
        ("cf_e4srec_permuted", "cf_e4srec"),
        ("idiomoe_entangled", "idiomoe"),
    ]
    # main: 4 models against bpr x 2 metrics; ablations apart
    assert comparisons.attrs["family_size"] == 8
    np.testing.assert_allclose(ablation.p_adjusted, correct(ablation.p_value.to_numpy(), "holm"))
    frame = ablation_frame(comparisons)
    entangled = frame[(frame.row == "idiomoe_entangled") & (frame.metric == "hr_at_10")].iloc[0]
    assert entangled.direction == "worse" and entangled.seeds == "0 1"
    assert entangled.relation == "parent" and entangled.reference == "idiomoe"
    permuted = frame[(frame.row == "cf_e4srec_permuted") & (frame.metric == "hr_at_10")].iloc[0]
    assert permuted.direction == "" and np.isnan(permuted.p_seed)  # one seed: no seed-level test
    markdown = render_ablations(frame, spec())
    assert (
        f"| Item tokens, entangled FFN | IDIOMoE | 2 | {entangled.row_mean:.4f}↓ "
        f"({entangled.reference_mean:.4f}) |" in markdown
    )
    assert "correction over the 4 comparisons of this table, its own family" in markdown

    # the ablation report (make bench-ablations): the ablation family (variant vs parent) and its
    # own main family (every row it covers vs the best baseline: the variants, and the parents at
    # every seed, which can include seeds the main job left to this target), each corrected apart,
    # exactly the files the Snakefile declares for it
    out = tmp_path / "reports" / "ablations"
    options = REPORT_DEFAULTS | {"metrics": ["hr_at_10", "ndcg_at_10"]}
    written = build_report(runs, ReportSpec(options), out, kind="ablations")
    assert set(report_files(out, options, "ablations")) == set(written) - {
        out / "comparisons.csv",
        out / "tables.pdf",
    }
    written_comparisons = pd.read_csv(out / "comparisons.csv")
    assert set(written_comparisons.family) == {"ablation", "main"}
    by_family = {f: g for f, g in written_comparisons.groupby("family")}
    assert len(by_family["ablation"]) == 4
    np.testing.assert_allclose(
        by_family["ablation"].sort_values(["system", "metric"]).p_adjusted,
        ablation.sort_values(["system", "metric"]).p_adjusted,
    )
    versus = by_family["main"]
    assert set(versus.reference) == {"bpr"}
    assert set(versus.system) == {"idiomoe_entangled", "cf_e4srec_permuted", "idiomoe", "cf_e4srec"}
    # its own family of 8
    np.testing.assert_allclose(versus.p_adjusted, correct(versus.p_value.to_numpy(), "holm"))
    main_rows = comparisons[comparisons.family == "main"].set_index(["system", "metric"])
    for row in versus.itertuples():  # the same pair, the same p-value, another correction
        assert row.p_value == pytest.approx(main_rows.loc[(row.system, row.metric)].p_value)
    results = pd.read_csv(out / "results_table.csv")
    assert set(results.model) == {
        "bpr",
        "idiomoe",
        "idiomoe_entangled",
        "cf_e4srec",
        "cf_e4srec_permuted",
    }
    assert "\\input{ablations.tex}" in (out / "tables.tex").read_text()
    assert "\\input{results_table.tex}" in (out / "tables.tex").read_text()
    main = build_report(runs, ReportSpec(options), tmp_path / "reports")
    assert not any(p.name.startswith("ablations") for p in main)
    main_comparisons = pd.read_csv(tmp_path / "reports" / "comparisons.csv")
    assert set(main_comparisons.family) == {"main"}


def test_every_row_of_the_ci_figure_has_an_interval(runs_dir):
    """Two seeds: a t-interval over seed means; one seed: a bootstrap interval over its users."""
    from llm4rec.report.figures import row_interval
    from llm4rec.stats import bootstrap_mean_ci, mean_ci

    rng = np.random.default_rng(4)
    make_run(
        runs_dir, "ml-a", "one_seed", "text_prompted", 0, (rng.random(N_USERS) < 0.2).astype(float)
    )
    groups = {}
    for r in runs_from_results(runs_dir):
        groups.setdefault((r.dataset, r.model), []).append(r)
    mean, low, high, over = row_interval(groups[("ml-a", "one_seed")], "hr_at_10")
    values = groups[("ml-a", "one_seed")][0].per_user()["hr_at_10"].to_numpy()
    assert over == "users" and (low, high) == bootstrap_mean_ci(values) and low < mean < high
    # the normal approximation
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(N_USERS), rel=0.15)
    good = groups[("ml-a", "llm_good")]
    assert row_interval(good, "hr_at_10")[1:] == (
        *mean_ci([r.metrics["test"]["hr_at_10"] for r in good])[2:],
        "seeds",
    )


def test_delta_is_per_metric_so_a_row_cannot_read_as_a_gain_while_most_metrics_fell(tmp_path):
    """A variant whose HR@10 rises by half while NDCG@10, HR@20 and NDCG@20 fall by a quarter, a
    fifth and a tenth: Δ prints all four changes, in column order."""
    from llm4rec.report.ablations import ablation_frame, render_ablations

    metrics = ("hr_at_10", "ndcg_at_10", "hr_at_20", "ndcg_at_20")
    n = 40
    parent = dict.fromkeys(metrics, np.full(n, 0.4))
    variant = {
        "hr_at_10": np.full(n, 0.6),
        "ndcg_at_10": np.full(n, 0.3),
        "hr_at_20": np.full(n, 0.32),
        "ndcg_at_20": np.full(n, 0.36),
    }
    for model, values in (("idiomoe", parent), ("idiomoe_entangled", variant)):
        make_run(tmp_path, "d", model, "moe_expert", 0, np.zeros(n), values=values)
    comparisons = compare_runs(
        runs_from_results(tmp_path), CompareSpec(metrics=metrics, min_users=1)
    )
    frame = ablation_frame(comparisons)
    by_metric = frame.set_index("metric")["relative_pct"]
    assert by_metric.to_dict() == pytest.approx(
        {"hr_at_10": 50.0, "ndcg_at_10": -25.0, "hr_at_20": -20.0, "ndcg_at_20": -10.0}
    )
    markdown = render_ablations(frame, CompareSpec(metrics=metrics))
    assert "| +50.0/-25.0/-20.0/-10.0% |" in markdown
    assert "Δ: the relative change from the reference of HR@10, NDCG@10, HR@20, NDCG@20" in markdown
    latex = render_ablations(frame, CompareSpec(metrics=metrics), Style("latex"))
    # LaTeX: two changes a line in the cell
    assert r"+50.0/$-$25.0 \\ $-$20.0/$-$10.0\%" in latex
    assert "nan" not in markdown + latex


def test_a_row_that_read_the_request_is_never_in_an_accuracy_table(tmp_path):
    """alpharec_intent ranked with requests written from the target: it is in no family of
    comparisons, the main table and the slices refuse it, and the report leaves it to the steer
    tables."""
    from llm4rec.report.runs import accuracy_runs
    from llm4rec.report.slices import slice_frame

    rng = np.random.default_rng(5)
    for model, paradigm in (("bpr", "baseline"), ("alpharec", "lm_representation")):
        make_run(tmp_path, "d", model, paradigm, 0, (rng.random(N_USERS) < 0.2).astype(float))
    request = {"requests": {"template": "something from the {decade}: {genres}"}}
    make_run(
        tmp_path, "d", "alpharec_intent", "lm_representation", 0, np.ones(N_USERS),
        evaluation=request,
    )  # fmt: skip
    runs = runs_from_results(tmp_path)
    comparisons = compare_runs(runs, spec())
    assert "alpharec_intent" not in set(comparisons.system) | set(comparisons.reference)
    assert set(comparisons[comparisons.family == "main"].system) == {"alpharec"}
    with pytest.raises(ValueError, match="alpharec_intent ranked with each user's request"):
        build_main_table(runs, comparisons, spec())
    with pytest.raises(ValueError, match="the slices: alpharec_intent"):
        slice_frame(runs, "ndcg_at_10", 4)
    assert {r.model for r in accuracy_runs(runs)} == {"bpr", "alpharec"}
    out = tmp_path / "reports"
    build_report(
        runs, ReportSpec(REPORT_DEFAULTS | {"metrics": ["hr_at_10"]}), out, kind="ablations"
    )
    for table in ("results_table.md", "ablations.md", "slices.md"):
        assert "AlphaRec + intention" not in (out / table).read_text(), table


def test_declared_references_are_tested_beside_the_parent_with_the_training_notes(tmp_path):
    """rta_recsys against its parent and against the run it gates with (input recsys: sasrec here),
    its chosen gate printed as a note; alpharec_zeroshot against its parent and its two floors."""
    from llm4rec.report.ablations import ablation_frame, render_ablations
    from llm4rec.report.build import run_notes

    rng = np.random.default_rng(6)
    for model, paradigm in (
        ("sasrec", "baseline"),
        ("mostpop", "baseline"),
        ("rta_reindex", "reindexed"),
        ("alpharec", "lm_representation"),
        ("alpharec_untrained", "lm_representation"),
        ("alpharec_zeroshot", "lm_representation"),
    ):
        make_run(tmp_path, "d", model, paradigm, 0, (rng.random(N_USERS) < 0.2).astype(float))
    note = "gate chose SASRec only (α = 0, chosen on validation): the row is that run's ranking"
    make_run(
        tmp_path, "d", "rta_recsys", "reindexed", 0, (rng.random(N_USERS) < 0.2).astype(float),
        run={"run": {"inputs": {"recsys": {"run": "sasrec", "seed": 0}}}, "fit": {"notes": [note]}},
    )  # fmt: skip
    runs = runs_from_results(tmp_path)
    comparisons = compare_runs(runs, spec())
    ablation = comparisons[comparisons.family == "ablation"]
    assert set(zip(ablation.system, ablation.reference, strict=True)) == {
        ("rta_recsys", "rta_reindex"),
        ("rta_recsys", "sasrec"),
        ("rta_reindex", "mostpop"),  # its declared floor (the zero-shot text row did not run)
        ("alpharec_untrained", "alpharec"),
        ("alpharec_zeroshot", "alpharec"),
        ("alpharec_zeroshot", "alpharec_untrained"),
        ("alpharec_zeroshot", "mostpop"),
    }
    frame = ablation_frame(comparisons)
    relation = frame.set_index(["row", "reference"])["relation"]
    assert relation[("rta_recsys", "rta_reindex")].iloc[0] == "parent"
    assert relation[("rta_recsys", "sasrec")].iloc[0] == "declared"
    markdown = render_ablations(frame, spec(), notes=run_notes(runs))
    assert "| RTA (reindex + RecSys gating)† | SASRec | 1 |" in markdown
    assert f"† RTA (reindex + RecSys gating): {note}." in markdown


def test_two_seeds_get_no_seed_level_test_and_the_notes_say_so(runs_dir):
    comparisons = compare_runs(runs_from_results(runs_dir), spec())
    assert comparisons["n_seeds"].max() == 2 and comparisons["p_seed"].isna().all()
    assert not comparisons["significant_seed"].any()
    table = build_main_table(runs_from_results(runs_dir), comparisons, spec())
    assert "Seed variance not tested (2 seeds)" in table.notes_text
    assert not any(c.seed_significant for c in table.cells.values())
    assert "‡" not in render_markdown(table)


def test_the_power_sentence_gives_each_metrics_median_detectable_effect(runs_dir):
    comparisons = compare_runs(runs_from_results(runs_dir), spec())
    table = build_main_table(runs_from_results(runs_dir), comparisons, spec())
    main = comparisons[comparisons.family == "main"]
    for metric, label in (("hr_at_10", "HR@10"), ("ndcg_at_10", "NDCG@10")):
        mde = main[main.metric == metric]["mde"].median()
        assert f"{mde:.3f} in {label}" in table.notes_text
    assert f"with {N_USERS:,} users, differences below" in table.notes_text
    assert (main["mde_alpha"] == 0.05 / len(main)).all()


def test_a_row_under_the_minimum_sample_is_in_the_diagnostics_table_only(runs_dir, tmp_path):
    """A row scored on 60 test users (under report.min_users, 100): no row of the main table, no
    test in its family; its comparisons are the diagnostics table's, corrected on their own."""
    rng = np.random.default_rng(8)
    sample = [f"u{i}" for i in range(0, N_USERS, 5)]  # 60 users
    make_run(
        runs_dir, "ml-a", "llm_tiny", "text_prompted", 0, (rng.random(60) < 0.2).astype(float),
        users=sample,
        evaluation={"n_users": {"test": 60}, "all_users": {"test": N_USERS}},
    )  # fmt: skip
    runs = runs_from_results(runs_dir)
    comparisons = compare_runs(runs, spec())
    tiny = comparisons[comparisons.system == "llm_tiny"]
    assert set(tiny.family) == {"diagnostic"} and (tiny.family_size == len(tiny)).all()
    assert "llm_tiny" not in set(comparisons[comparisons.family == "main"].system)
    table = build_main_table(runs, comparisons, spec())
    assert "llm_tiny" not in {m for _, m in table.rows}
    assert table.left_out == {"llm_tiny": "diagnostics"}
    out = tmp_path / "reports"
    build_report(runs, ReportSpec(REPORT_DEFAULTS | {"metrics": ["hr_at_10", "ndcg_at_10"]}), out)
    rows = [line for line in (out / "results_table.md").read_text().splitlines() if "|" in line]
    assert not any("llm_tiny" in line for line in rows)
    assert (
        "Not ranked here: llm_tiny (the diagnostics table: fewer than 100"
        in (out / "results_table.md").read_text()
    )
    diagnostics = (out / "diagnostics.md").read_text()
    assert "| llm_tiny | BPR | HR@10 |" in diagnostics and "| 60 |" in diagnostics


def test_every_table_fits_a_two_column_acm_page(runs_dir, tmp_path):
    """The main and ablation reports compiled table by table in ACM's sigconf (texlive-publishers;
    `make tex`): no overfull box over 2 pt (build_report checks it and would raise, naming the
    table); a table too wide even at the scale floor is refused, naming it."""
    from llm4rec.report.build import check_fit, two_column_preamble

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (make test installs it when run as root)")
    assert "acmart" in two_column_preamble()[0], "make tex installs texlive-publishers (acmart)"
    rng = np.random.default_rng(9)
    for seed in (0, 1):
        for model in ("idiomoe", "idiomoe_entangled", "rta_reindex", "rta_bias"):
            paradigm = "moe_expert" if "idiomoe" in model else "reindexed"
            make_run(
                runs_dir, "ml-a", model, paradigm, seed, (rng.random(N_USERS) < 0.2).astype(float)
            )
    runs = [r for r in runs_from_results(runs_dir) if r.dataset == "ml-a"]
    for kind in ("main", "ablations"):
        out = tmp_path / kind
        written = build_report(runs, ReportSpec(REPORT_DEFAULTS), out, kind=kind)
        assert out / "tables.pdf" in written and (out / "notes.tex").is_file()
        widths = check_fit(out, [p.stem for p in written if p.suffix == ".tex" and p.stem
                                 not in ("tables", "notes")])  # fmt: skip
        assert widths and max(widths.values()) <= 2.0
        assert r"\llmrecnotes" in (out / "notes.tex").read_text()
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "too_wide.tex").write_text(
        "\\begin{tabular}{" + "l" * 40 + "}" + " & ".join(["a-rather-wide-cell"] * 40) + "\\\\"
        "\\end{tabular}\n"
    )
    with pytest.raises(RuntimeError, match=r"too_wide.tex: overflows a two-column page by"):
        check_fit(wide, ["too_wide"])


def test_a_grid_of_many_datasets_sets_its_main_table_in_parts_that_fit(tmp_path):
    """Five datasets of four metrics (twenty figure columns and the Impr. columns) do not fit a
    page: the LaTeX main table is set in parts of at most LATEX_PART_COLUMNS columns, consecutive
    datasets, each with the rows run on its datasets and its own label, and each part fits the
    two-column page; the Markdown table stays one."""
    from llm4rec.report.build import check_fit
    from llm4rec.report.tables import (
        LATEX_PART_COLUMNS,
        _columns,
        _render_latex_part,
        latex_parts,
    )

    rng = np.random.default_rng(11)
    runs_dir = tmp_path / "runs"
    four = CompareSpec(metrics=("hr_at_10", "ndcg_at_10", "hr_at_20", "ndcg_at_20"))
    datasets = [f"ml-{c}" for c in "abcde"]
    for dataset in datasets:
        for model, paradigm in (("bpr", "baseline"), ("mostpop", "baseline")):
            make_run(runs_dir, dataset, model, paradigm, 0, (rng.random(N_USERS) < 0.2) * 1.0)
    make_run(runs_dir, "ml-e", "llm_only_e", "text_prompted", 0, (rng.random(N_USERS) < 0.3) * 1.0)
    runs = runs_from_results(runs_dir)
    table = build_main_table(runs, compare_runs(runs, four), four)
    parts = latex_parts(table)
    assert [p.datasets for p in parts] == [["ml-a", "ml-b"], ["ml-c", "ml-d"], ["ml-e"]]
    assert all(len(_columns(p)) <= LATEX_PART_COLUMNS for p in parts)
    assert [p.label for p in parts] == ["tab:results", "tab:results-2", "tab:results-3"]
    assert ("text_prompted", "llm_only_e") in parts[2].rows
    assert all(("text_prompted", "llm_only_e") not in p.rows for p in parts[:2])
    assert parts[1].caption.endswith("(part 2 of 3: ml-c, ml-d).")
    latex = render_latex(table)
    assert latex.count(r"\begin{tabular}") == 3
    assert render_markdown(table).count("| Paradigm | Model |") == 1
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (make test installs it when run as root)")
    out = tmp_path / "parts"
    out.mkdir()
    (out / "results_table.tex").write_text(latex)
    assert check_fit(out, ["results_table"])["results_table"] <= 2.0
    (out / "one_float.tex").write_text(_render_latex_part(table, "auto"))  # one float: too wide
    with pytest.raises(RuntimeError, match="one_float.tex: overflows a two-column page"):
        check_fit(out, ["one_float"])


def test_a_pair_the_main_report_tested_keeps_its_verdict_in_the_ablation_report(runs_dir):
    """One verdict per pair: the ablation report's main family takes the main report's adjusted
    p-value and mark for a pair both test (same rows, metric, seeds, users), and corrects only the
    pairs the main report does not have."""
    rng = np.random.default_rng(10)
    for seed in (0, 1):
        make_run(
            runs_dir,
            "ml-a",
            "idiomoe",
            "moe_expert",
            seed,
            (rng.random(N_USERS) < 0.3).astype(float),
        )
    make_run(
        runs_dir, "ml-a", "idiomoe_entangled", "moe_expert", 0,
        (rng.random(N_USERS) < 0.3).astype(float),
    )  # fmt: skip
    runs = [r for r in runs_from_results(runs_dir) if r.dataset == "ml-a"]
    main_runs = [r for r in runs if r.model != "idiomoe_entangled"]
    main = compare_runs(main_runs, spec())
    both = compare_runs(runs, spec(), ("ablation", "main"), verdicts=main)
    kept = both[both.verdict_from == "main report"]
    assert len(kept) == len(main)  # every pair of the main report is in the ablation report's
    by_pair = main.set_index(["system", "metric"])
    for row in kept.itertuples():
        assert row.p_adjusted == by_pair.loc[(row.system, row.metric)].p_adjusted
        assert row.significant == by_pair.loc[(row.system, row.metric)].significant
    own = both[(both.family == "main") & (both.verdict_from != "main report")]
    assert set(own.system) == {"idiomoe_entangled"}
    from llm4rec.stats import correct

    np.testing.assert_allclose(own.p_adjusted, correct(own.p_value.to_numpy(), "holm"))
    assert (own.family_size == len(own)).all()

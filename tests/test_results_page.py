"""`llm4rec results-page`: every number on a generated page is the report CSVs' (or, for the per-run
timings, the runs' own run.json), and the README's results block is the main table."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from llm4rec.config import load_grid
from llm4rec.io import read_json, write_json
from llm4rec.report.build import REPORT_DEFAULTS, ReportSpec, build_report
from llm4rec.report.results_page import README_BEGIN, README_END, write_results_page
from llm4rec.report.runs import runs_from_folders
from llm4rec.report.tables import display_name

from .helpers.runs import make_run

RATES = {"mostpop": 0.1, "bpr": 0.3, "idiomoe": 0.45, "idiomoe_entangled": 0.35}
PARADIGM = {"mostpop": "baseline", "bpr": "baseline"}
NUMBER = re.compile(r"-?\d+\.\d+|-?\d+")


@pytest.fixture
def finished_grid(tmp_path):
    """A grid with a main job (two baselines, IDIOMoE on 2 seeds) and an ablation target
    (IDIOMoE entangled on seed 0), its run folders, and both reports."""
    raw = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "reports_dir": str(tmp_path / "reports"),
        "seeds": [0, 1],
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "report": {"metrics": ["hr_at_10", "ndcg_at_10"]},
        "models": [
            {"name": "mostpop"},
            {"name": "bpr"},
            {"name": "idiomoe"},
            {"name": "idiomoe_entangled", "seeds": [0]},
        ],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(raw))
    grid = load_grid(tmp_path / "grid.yaml")
    rng = np.random.default_rng(7)
    for i, (dataset, model, seed) in enumerate(grid.runs("all")):
        hits = (rng.random(300) < RATES[model]).astype(float)
        make_run(
            grid.grid_dir / "runs", dataset, model, PARADIGM.get(model, "moe_expert"), seed, hits
        )
        folder = grid.run_dir(dataset, model, seed)
        record = read_json(folder / "run.json")
        start = 1_796_000_000.0 + 100 * i
        record["timing"] = {
            "train_start": start,
            "train_end": start + 10 + i,
            "rank_start": start + 10 + i,
            "rank_end": start + 12.5 + 2 * i,
        }
        record["environment"] = {
            "git_commit": "0123456789abcdef",
            "cpu_model": "Test CPU",
            "cpu_count": 2,
            "cpu_capability": "AVX2",
            "python": "3.11.7",
            "packages": {"torch": "2.13.0+cpu"},
        }
        write_json(folder / "run.json", record)
    options = REPORT_DEFAULTS | {"metrics": ["hr_at_10", "ndcg_at_10"]}
    for kind in ("main", "ablations"):
        runs = runs_from_folders([grid.run_dir(*cell) / "metrics.json" for cell in grid.runs(kind)])
        build_report(runs, ReportSpec(options), grid.report_dir(kind), kind=kind)
    readme = tmp_path / "README.md"
    block = f"{README_BEGIN}\nstale block\n{README_END}"
    readme.write_text(f"# x\n\n## Latest results\n{block}\n\n## Models\n")
    return grid, readme, tmp_path / "docs" / "results"


def section(page: str, title: str, subsections: bool = False) -> str:
    """The text under `title` up to the next heading (`subsections`: up to the next `## `)."""
    text = page.split(f"{title}\n", 1)[1].split("\n## ", 1)[0]
    return text if subsections else text.split("\n### ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def number(cell: str) -> float:
    return float(NUMBER.search(cell.replace("−", "-")).group())


def assert_main_table_and_timings(page: str, grid) -> None:
    """The page's main table holds results_table.csv's means (what the tests compared) for every
    model, and its per-run timings are the runs' own run.json (one dataset, ml-100k)."""
    main = pd.read_csv(grid.report_dir("main") / "results_table.csv")
    rows = table_rows(section(page, "## Main table"))
    checked = 0
    for row in rows:
        if not row[1] or row[1].startswith("*"):
            continue  # an italic reference line
        # a trailing ° marks a row still improving at the end of its budget
        model = next(m for m in main.model.unique() if display_name(m) == row[1].rstrip("°"))
        for metric, cell in zip(("hr_at_10", "ndcg_at_10"), row[3:5], strict=True):
            expected = main[(main.model == model) & (main.metric == metric)]["mean"].item()
            assert number(cell) == pytest.approx(expected, abs=5e-5), (model, metric)
            checked += 1
    assert checked == 2 * main.model.nunique()
    timed = table_rows(section(page, "## Per-run timings (run.json)"))
    assert len(timed) == len(grid.runs("all"))  # every finished run
    for row in timed:
        model, seed = row[0], int(row[1])
        timing = read_json(grid.run_dir("ml-100k", model, seed) / "run.json")["timing"]
        assert number(row[2]) == pytest.approx(
            timing["train_end"] - timing["train_start"], abs=0.05
        )
        assert number(row[3]) == pytest.approx(timing["rank_end"] - timing["rank_start"], abs=0.05)


def test_every_number_on_the_page_is_the_reports(finished_grid):
    grid, readme, out = finished_grid
    written = write_results_page(grid, out, readme)
    page_path = out / "t-2026-11-30-0123456.md"
    assert page_path in written and (out / "README.md") in written
    page = page_path.read_text()

    assert_main_table_and_timings(page, grid)

    # the ablation table: row and reference means from ablations.csv
    ablations = pd.read_csv(grid.report_dir("ablations") / "ablations.csv")
    rows = table_rows(section(page, "## Ablations"))
    assert rows, "the page has the ablation table"
    values = [float(t) for row in rows for c in row[3:] for t in NUMBER.findall(c)]
    for value in ablations.row_mean.tolist() + ablations.reference_mean.tolist():
        assert any(v == pytest.approx(value, abs=5e-5) for v in values)
    assert (grid.report_dir("ablations") / "ablations.md").read_text().strip() in page

    # costs and slices: every number is one of the CSV's, at the precision it is printed
    # (a slices section is one table per dataset and slice, each under its own ### heading)
    for title, csv, labels, tables in (
        # dataset, paradigm, model
        (
            "## Costs",
            grid.report_dir("main") / "cost_table.csv",
            3,
            False,
        ),
        ("## Slices", grid.report_dir("main") / "slices.csv", 1, True),  # model
        ("## Slices of the ablation target", grid.report_dir("ablations") / "slices.csv", 1, True),
    ):
        frame = pd.read_csv(csv)
        known = frame.select_dtypes("number").to_numpy().ravel()
        known = known[~np.isnan(known)]
        rows = [
            row
            for table in section(page, title, subsections=tables).split("\n### ")
            for row in table_rows(table[table.find("|") :])
        ]
        assert rows, title
        for row in rows:
            for cell in row[labels:]:
                for token in NUMBER.findall(cell):
                    if "–" in cell or "(n=" in cell:
                        continue  # bucket labels: history-length ranges and user counts
                    value = float(token) * (1e6 if cell.endswith("M") else 1)
                    places = len(token.split(".")[1]) if "." in token else 0
                    tol = 0.5 * 10**-places * (1e6 if cell.endswith("M") else 1) + 1e-12
                    assert np.any(np.abs(known - value) <= tol), (title, cell)

    # the README's block is the main table with a link to the page; rerunning replaces it
    text = readme.read_text()
    block = text.split(README_BEGIN)[1].split(README_END)[0]
    assert "stale block" not in block and "(docs/results/t-2026-11-30-0123456.md)" in block
    assert (grid.report_dir("main") / "results_table.md").read_text().strip() in block
    write_results_page(grid, out, readme)
    assert readme.read_text() == text and text.count(README_BEGIN) == 1
    assert "[t-2026-11-30-0123456](t-2026-11-30-0123456.md)" in (out / "README.md").read_text()


@pytest.mark.slow
def test_the_page_of_a_grid_really_run_through_snakemake_is_its_reports(finished_ml100k, tmp_path):
    """The shared finished grid (MostPop, BPR, SASRec, emb_knn): its page's main table and timings
    are its reports' and its runs', and it has no ablation section (the grid has no variant)."""
    grid = finished_ml100k.grid
    page_path, *_ = write_results_page(grid, tmp_path / "results", None)
    page = page_path.read_text()
    assert page_path.name.startswith("e2e-")
    assert_main_table_and_timings(page, grid)
    assert "## Ablations" not in page


def test_a_grid_without_finished_runs_or_markers_is_refused(finished_grid, tmp_path):
    grid, readme, out = finished_grid
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="README.md: needs one '<!-- results:begin -->' line"):
        write_results_page(grid, out, readme)
    empty = load_grid(tmp_path / "grid.yaml")
    for cell in empty.runs("all"):
        (empty.run_dir(*cell) / "run.json").unlink()
    with pytest.raises(FileNotFoundError, match="no finished run of grid 't'"):
        write_results_page(empty, out, None)


def test_rl_curves_are_read_from_run_json_and_averaged_between_validations():
    from llm4rec.report.results_page import rl_curve_rows

    log = [
        {"step": 1, "reward": 0.2, "kl": 0.0, "zero_advantage_share": 1.0, "entropy": 2.0},
        {"step": 2, "reward": 0.4, "kl": 0.2, "zero_advantage_share": 0.5, "entropy": 1.0,
         "valid": 0.25},
        {"step": 3, "reward": 0.1, "kl": 0.3, "zero_advantage_share": 0.0, "entropy": 1.5,
         "valid": 0.125},
    ]  # fmt: skip
    record = {
        "fit": {
            "grpo_log": log,
            "policy": {"source": "run sid_tiger/seed0"},
            "best_step": 2,
            "selection_metric": "ndcg_at_10",
            "valid_ndcg_at_10_at_start": 0.2,
        }
    }
    rows = rl_curve_rows([(("d", "sid_tiger_grpo", 0), record), (("d", "bpr", 0), {"fit": {}})])
    assert "| 0 | | | | | 0.2000 |" in rows
    assert "| 2 | 0.3000 | 0.1000 | 0.750 | 1.500 | 0.2500 |" in rows  # steps 1-2 averaged
    assert "| 3 | 0.1000 | 0.3000 | 0.000 | 1.500 | 0.1250 |" in rows
    assert not any("bpr" in row for row in rows)


def test_a_page_is_named_after_the_commit_of_the_last_run_to_finish():
    from types import SimpleNamespace

    from llm4rec.report.results_page import page_stem

    def record(commit, end):
        return {"environment": {"git_commit": commit}, "timing": {"rank_end": end}}

    # the grid's first runs at commit e6..., two more added later at 61... (alphabetically first)
    records = [
        (("d", "a", 0), record("e6287da" + "0" * 33, 1_796_120_000.0)),
        (("d", "b", 0), record("612f9d6" + "0" * 33, 1_796_127_000.0)),
        (("d", "c", 0), record("e6287da" + "0" * 33, 1_796_121_000.0)),
    ]
    stem, date, commit = page_stem(SimpleNamespace(name="default"), records)
    assert (stem, commit) == ("default-2026-12-01-612f9d6", "612f9d6")
    assert date == "2026-12-01"


def test_the_changes_from_the_previous_page_row_by_row():
    from llm4rec.report.results_page import table_changes

    old = """
| Paradigm | Model | Seeds | d NDCG@10 | d Impr. |
|---|---|---|---|---|
| Baselines | SASRec | 2 | **0.0984** | – |
| Baselines | BPR | 2 | 0.0697↓ | -35.4% |
| CF-injected | E4SRec\\* | 1 | 0.0154↓ | -80.9% |
| | *↳ SASRec, same users/seeds* | | *0.1064* | |

Notes that follow the table.
| Other | table | | | |
"""
    new = """
| Paradigm | Model | Seeds | d NDCG@10 | d Impr. |
|---|---|---|---|---|
| Baselines | SASRec° | 2 | 0.0801↓ | -8.0% |
| Baselines | SASRec+ (CE) | 2 | **0.0990** | – |
| Baselines | BPR | 2 | 0.0697↓ | -29.6% |
"""
    assert table_changes(old, new) == [
        "Rows added: SASRec+ (CE) (Baselines).",
        "Rows removed: E4SRec (CF-injected).",
        "SASRec (Baselines): d NDCG@10 0.0984 → 0.0801; d Impr. – → -8.0%.",
        "BPR (Baselines): d Impr. -35.4% → -29.6%.",
    ]


def test_the_index_orders_pages_by_date_then_commit_history_not_file_times(tmp_path):
    """Two pages of one date: the later commit first, whatever the files' times say (a clone
    writes every file at once); a commit git does not know is listed after the known ones of its
    date. Uses two recent commits of this repository."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from llm4rec.report.results_page import write_index

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    done = subprocess.run(
        ["git", "rev-list", "--reverse", "--max-count=2", "HEAD~1"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if done.returncode != 0 or len(done.stdout.split()) < 2:
        pytest.skip("not a git checkout with history")
    older, newer = (c[:7] for c in done.stdout.split()[:2])
    pages = {
        "new": tmp_path / f"g-2026-12-06-{newer}.md",
        "old": tmp_path / f"g-2026-12-06-{older}.md",
        "unknown": tmp_path / "g-2026-12-06-0000000.md",
        "earlier": tmp_path / f"g-2026-12-05-{newer}.md",
    }
    for age, page in enumerate(pages.values()):  # file times the reverse of the commits'
        page.write_text("# page\n")
        os.utime(page, (1_000_000 + age, 1_000_000 + age))
    index = write_index(tmp_path).read_text()
    listed = [line for line in index.splitlines() if line.startswith("- [")]
    assert listed == [f"- [{p.stem}]({p.name})" for p in pages.values()]


def test_only_the_default_grid_s_page_refreshes_the_readme(monkeypatch):
    """`llm4rec results-page` without --readme: the README's block is the main job's latest page;
    a page of another grid (new-items, anchors) leaves it alone."""
    from pathlib import Path

    import llm4rec.report.results_page as results_page
    from llm4rec.cli import main
    from llm4rec.config import DEFAULT_CONFIG

    chosen = []
    monkeypatch.setattr(
        results_page,
        "write_results_page",
        lambda grid, out, readme, wall: chosen.append(readme) or [],
    )
    for config in (str(DEFAULT_CONFIG), "benchmarks/new_items.yaml"):
        assert main(["results-page", "--config", config]) == 0
    assert main(["results-page", "--config", "benchmarks/new_items.yaml", "--readme", "R.md"]) == 0
    assert chosen == [Path("README.md"), None, Path("R.md")]

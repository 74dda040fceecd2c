"""Published anchors (llm4rec/report/anchors.py): the shipped published.csv names a source and a
protocol for every figure and points at cells of benchmarks/anchors.yaml; bad rows are refused by
file, line and field; ours, its intervals and the verdict against a hand computation."""

import csv
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from llm4rec.config import load_grid
from llm4rec.io import write_json
from llm4rec.report.anchors import (
    COLUMNS,
    AnchorError,
    anchors_frame,
    read_published,
    render_latex,
    render_markdown,
    runs_frame,
    write_anchors,
)

from .helpers.runs import make_run

SHIPPED = "benchmarks/anchors/published.csv"


def test_every_shipped_figure_names_its_source_and_protocol_and_a_cell_of_the_anchor_grid():
    published = read_published(SHIPPED)
    assert len(published) >= 10
    grid = load_grid("benchmarks/anchors.yaml")
    cells = {(d, m) for d, m, _ in grid.runs()}
    for figure in published:
        assert figure.source and figure.location and figure.protocol and figure.dataset_variant
        assert figure.run is None or figure.run in cells, figure
        assert (figure.run is None) == (figure.match == "not_run")
    # the exact-protocol SASRec anchors on ML-1M are rows run in their exact setup
    exact = {(f.anchor, f.metric) for f in published if f.match == "exact"}
    assert {
        ("klenitskiy_sasrec_plus", "ndcg_at_10"),
        ("klenitskiy_sasrec_bce", "ndcg_at_10"),
    } <= exact


ROW = {
    "anchor": "a",
    "model": "SASRec",
    "metric": "ndcg",
    "cutoff": "10",
    "value": "0.2",
    "dataset_variant": "ML-1M 5-core",
    "protocol": "leave-one-out",
    "source": "paper, Table 1",
    "location": "owner/repo: README.md",
    "run": "d/mostpop",
    "match": "exact",
    "setup": "",
}


def _csv(tmp_path, *rows):
    path = tmp_path / "published.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([[r[c] for c in COLUMNS] for r in rows])
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": ""}, r"published.csv:3: field 'source' is empty"),
        ({"protocol": " "}, r"published.csv:3: field 'protocol' is empty"),
        ({"metric": "auc"}, r"published.csv:3: metric 'auc' is not one of: hr, ndcg, recall, mrr"),
        ({"value": "31.5"}, r"published.csv:3: cutoff 10 must be >= 1 and value 31.5 in \[0, 1\]"),
        ({"match": "close"}, r"published.csv:3: match 'close' is not one of"),
        ({"match": "not_run"}, r"published.csv:3: match not_run names a run \('d/mostpop'\)"),
        ({"run": "mostpop"}, r"published.csv:3: run 'mostpop' must be dataset/model"),
        ({"match": "config"}, r"published.csv:3: match config names the difference in 'setup'"),
        ({"anchor": "a"}, r"published.csv:3: a ndcg@10 is already published at line 2"),
    ],
)
def test_bad_rows_are_refused_naming_file_line_and_field(tmp_path, change, message):
    first = ROW | {"anchor": "first"} if "anchor" not in change else ROW
    with pytest.raises(AnchorError, match=message):
        read_published(_csv(tmp_path, first, ROW | change))


def test_an_unquoted_comma_is_refused(tmp_path):
    path = _csv(tmp_path, ROW)
    path.write_text(path.read_text().rstrip("\n") + ",extra\n")
    with pytest.raises(AnchorError, match=r"published.csv:2: more fields than the header's 12"):
        read_published(path)


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text("anchor,model\na,b\n")
    with pytest.raises(AnchorError, match=r"published.csv: missing column\(s\) metric, cutoff"):
        read_published(path)


def _grid(tmp_path):
    raw = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "reports_dir": str(tmp_path / "reports"),
        "seeds": [0],
        "evaluation": {"cutoffs": [10, 20]},
        "report": {"metrics": ["ndcg_at_10"], "slice_metric": "ndcg_at_10"},
        "datasets": {"d": {"source": "ml-100k"}},
        "models": [{"name": "mostpop"}, {"name": "bpr", "seeds": [0, 1]}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_grid(path)


def test_ours_its_intervals_and_the_verdict_by_hand(tmp_path):
    grid = _grid(tmp_path)
    rng = np.random.default_rng(0)
    one = (rng.random(400) < 0.3).astype(float)  # mostpop: one seed
    seeds = [(rng.random(400) < p).astype(float) for p in (0.5, 0.6)]  # bpr: two seeds
    root = grid.grid_dir / "runs"
    make_run(root, "d", "mostpop", "baseline", 0, one)
    for seed, hits in enumerate(seeds):
        make_run(root, "d", "bpr", "baseline", seed, hits)
    write_json(
        grid.split_dir("d") / "split.json",
        {"stats": {"test_users": 400, "items": 50, "train_interactions": 9000,
                   "valid_interactions": 400, "test_interactions": 400,
                   "test_tied_with_history": 100}},
    )  # fmt: skip

    def t_interval(x):
        half = stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / math.sqrt(len(x))
        return np.mean(x) - half, np.mean(x) + half

    low, high = t_interval(one)
    inside, above = (low + high) / 2, high + 0.01
    per_user = (seeds[0] + seeds[1]) / 2
    b_low, b_high = t_interval(per_user)
    s_low, s_high = t_interval([seeds[0].mean(), seeds[1].mean()])  # df = 1: very wide
    rows = [
        ROW | {"value": inside},
        ROW | {"anchor": "b", "value": above},
        ROW | {"anchor": "c", "run": "d/bpr", "value": 0.0},
        ROW | {"anchor": "e", "run": "", "match": "not_run", "setup": "did not fit"},
        ROW | {"anchor": "f", "value": inside, "match": "dataset", "setup": "ml-latest-small"},
    ]
    frame = anchors_frame(grid, read_published(_csv(tmp_path, *rows))).set_index("anchor")
    assert frame.loc["a", "ours"] == pytest.approx(one.mean())
    assert (frame.loc["a", "users_low"], frame.loc["a", "users_high"]) == pytest.approx((low, high))
    assert frame.loc["a", "verdict"] == "inside"
    assert frame.loc["b", "verdict"] == "outside (ours lower)"
    assert frame.loc["b", "difference"] == pytest.approx(one.mean() - above)
    # two seeds: each user's mean over seeds, then the interval over users; and over seed means
    assert frame.loc["c", "ours"] == pytest.approx(per_user.mean())
    assert frame.loc["c", "users_low"] == pytest.approx(b_low)
    assert (frame.loc["c", "seeds_low"], frame.loc["c", "seeds_high"]) == pytest.approx(
        (s_low, s_high)
    )
    # the wider interval decides: 0 lies inside the seed interval (df = 1), not the users' one
    assert b_low > 0 and s_low < 0 and frame.loc["c", "verdict"] == "inside"
    assert frame.loc["e", "verdict"] == "not run"
    assert frame.loc["f", "verdict"] == "another dataset: not a check"  # never read as a check
    runs = runs_frame(grid)
    assert runs.set_index("model").loc["mostpop", "tied"] == 100
    assert runs.set_index("model").loc["mostpop", "interactions"] == 9800
    text = render_markdown(frame.reset_index(), runs)
    assert (
        f"| SASRec | NDCG@10 | {above:.4f} | {one.mean():.4f} | [{low:.4f}, {high:.4f}] |" in text
    )
    assert "did not fit" in text and "100 (25%)" in text
    assert r"\begin{tabular}" in render_latex(frame.reset_index())
    written = write_anchors(grid, _csv(tmp_path, *rows), tmp_path / "out")
    assert [p.name for p in written] == [
        "anchors.md",
        "anchors.tex",
        "anchors.csv",
        "anchor_runs.csv",
    ]


def test_a_run_outside_the_grid_or_its_cutoffs_is_refused(tmp_path):
    grid = _grid(tmp_path)
    with pytest.raises(AnchorError, match=r"run d/sasrec is not a cell of grid"):
        anchors_frame(grid, read_published(_csv(tmp_path, ROW | {"run": "d/sasrec"})))
    with pytest.raises(AnchorError, match=r"mostpop is evaluated at cutoffs \[10, 20\]"):
        anchors_frame(grid, read_published(_csv(tmp_path, ROW | {"cutoff": 5})))


def test_the_protocol_line_states_the_tied_share_and_rule(tmp_path):
    from llm4rec.report.runs import runs_from_folders
    from llm4rec.report.tables import tie_sentences

    root = tmp_path / "g" / "runs"
    make_run(root, "d", "mostpop", "baseline", 0, np.ones(8))
    write_json(
        tmp_path / "g" / "data" / "d" / "split.json",
        {"stats": {"test_users": 8, "test_tied_with_history": 3}},
    )
    runs = runs_from_folders([root / "d" / "mostpop" / "seed0"])
    assert tie_sentences(runs) == [
        "Ties on d: 3 of 8 test targets (38%) share their timestamp with the history's last item, "
        "equal timestamps ordered by the file's row order."
    ]
    # a rule that changes the ties: the count under `keep`, and what the rule did
    split = {"test_ties": {"rule": "drop", "tied_users_if_kept": 3, "users_if_kept": 8}}
    write_json(tmp_path / "g" / "data" / "d" / "split.json", split | {"stats": {"test_users": 5}})
    runs = runs_from_folders([root / "d" / "mostpop" / "seed0"])
    assert tie_sentences(runs) == [
        "Ties on d: with the last interaction as the target, 3 of 8 (38%) would share their "
        "timestamp with the history's last item; here those users are dropped (5 remain); equal "
        "timestamps ordered by the file's row order."
    ]
    runs = runs_from_folders([root / "d" / "mostpop" / "seed0"])
    (tmp_path / "g" / "data" / "d" / "split.json").unlink()
    assert tie_sentences(runs) == []  # a split without the count: nothing claimed


def test_the_notes_name_the_sasrec_each_cf_row_read(tmp_path):
    from llm4rec.report.runs import runs_from_folders
    from llm4rec.report.tables import source_sentences

    for model in ("cf_e4srec", "cf_llara"):
        make_run(tmp_path, "d", model, "cf_injected", 0, np.ones(4),
                 run={"run": {"inputs": {"cf_source": {"run": "sasrec"}}}})  # fmt: skip
    make_run(tmp_path, "d", "sasrec", "baseline", 0, np.ones(4))
    runs = runs_from_folders(sorted((tmp_path / "d").glob("*/seed0")))
    assert source_sentences(runs) == [
        "CF embeddings of E4SRec (CF soft tokens), LLaRA (CF soft tokens): SASRec (sasrec), "
        "same dataset, same seed."
    ]
    make_run(tmp_path, "d", "cf_llara", "cf_injected", 0, np.ones(4),
             run={"run": {"inputs": {"cf_source": {"run": "sasrec", "seed": 1}}}})  # fmt: skip
    runs = runs_from_folders(sorted((tmp_path / "d").glob("*/seed0")))
    assert source_sentences(runs)[1] == (
        "CF embeddings of LLaRA (CF soft tokens): SASRec (sasrec), same dataset, seed 1."
    )

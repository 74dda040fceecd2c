"""Every registered row at the toy cost `llm4rec smoke` gives it, run twice: a contract, a rerun.

The grid is generated from the registry, not written here: each row is `{"name": row}` with its
declared inputs, and `llm4rec.smoke.smoke_config` shrinks it (tiny backbones of the real
architectures, 4 steps, a few users, the row module's own `toy_params`). A new row is in this test
with no edit, and costs about a second of the run.

- The contract, per row: its rankings are a ranking of the catalogue minus the user's history,
  cut at the grid's largest cutoff, over the users it was scored on; it says whether it reads
  requests; its run record has the grid's config hash and a weights digest.
- The rerun, per row: two processes side by side (competing for the two cores, as a rerun next to
  other work does) under different PYTHONHASHSEED values give the same rankings, per-user metrics,
  final weights (sha256 of the state dict) and semantic-ID code tables. The guarantee is "same
  code, same config, same machine kind and thread count". With deterministic algorithms off
  (llm4rec.determinism) the rows with sparse graph products (LightGCN, AlphaRec) differ between
  the two processes here, so this test fails; IDIOMoE's racing gather showed it at larger sizes.

OpenMP threads wait passively (OMP_WAIT_POLICY): two processes of two threads on two cores
otherwise spin against each other, ten times slower, with the same results.
"""

import hashlib
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from llm4rec import layout
from llm4rec.data.split import read_split
from llm4rec.io import read_json
from llm4rec.models import MODELS

from .helpers.rerun import CUTOFFS, REPO, toy_grid, write_dataset

pytestmark = pytest.mark.slow


def replica(grid_path: str) -> None:
    """The whole grid in this one process: prepare, artifacts, then every model in grid order
    (upstream runs first), trained, ranked and evaluated."""
    from llm4rec.config import load_grid
    from llm4rec.runner import build_artifact, evaluate_run, prepare_dataset, train_and_rank

    grid = load_grid(grid_path)
    for dataset in grid.datasets:
        prepare_dataset(grid, dataset)
    for dataset, name, key in sorted(grid.artifacts()):
        build_artifact(grid, dataset, name, key)
    for dataset, model, seed in grid.source_runs() + grid.runs():  # transferred-from runs first
        train_and_rank(grid, dataset, model, seed)
        evaluate_run(grid, dataset, model, seed)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerun")
    write_dataset(root)
    grid = toy_grid(root)
    procs = []
    for name, hash_seed in (("a", "1"), ("b", "2")):
        workdir = root / name  # results/ and the item-embedding cache are each replica's own
        workdir.mkdir()
        (workdir / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
            "PYTHONHASHSEED": hash_seed,
            "PYTHONPATH": str(REPO),
            "TQDM_DISABLE": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from tests.test_rerun import replica; replica(sys.argv[1])",
                    "grid.yaml",
                ],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for proc in procs:
        output = proc.communicate(timeout=1500)[0]
        assert proc.returncode == 0, output[-5000:]
    from llm4rec.config import load_grid

    grids = [load_grid(root / name / "grid.yaml") for name in ("a", "b")]
    for grid, name in zip(grids, ("a", "b"), strict=True):  # its results, read from here
        grid.raw["results_dir"] = str(root / name / "results")
    return grids


def test_the_grid_is_every_registered_row_at_smoke_cost(two_runs):
    grid = two_runs[0]
    assert grid.models == list(MODELS)
    for name in ("text_prompted", "sid_tiger", "alpharec"):
        assert grid.model_entry(name)["params"], name  # shrunk by smoke (and toy_params)


@pytest.mark.parametrize("model", list(MODELS))
def test_each_row_ranks_the_catalogue_minus_history_and_records_its_run(two_runs, model):
    grid = two_runs[0]
    folder = grid.run_dir("toy", model, 0)
    split = read_split(grid.split_dir("toy"))
    catalogue = set(split.items["item_id"])
    history = split.history("test")
    rankings = pd.read_parquet(folder / layout.rankings("test"))
    scored = pd.read_parquet(folder / "per_user_test.parquet")
    assert set(rankings["user_id"]) == set(scored["user_id"]) and len(scored) > 0
    for user, ranked in rankings.groupby("user_id"):
        candidates = catalogue - set(history.get(user, []))
        assert list(ranked["rank"]) == list(range(1, len(ranked) + 1)), (model, user)
        assert len(ranked) == min(max(CUTOFFS), len(candidates)), (model, user)
        assert set(ranked["item_id"]) <= candidates, (model, user)
    counterfactual = folder / layout.COUNTERFACTUAL_RANKINGS
    assert counterfactual.is_file() == MODELS[model].reads_requests
    record = read_json(folder / layout.RUN_JSON)
    assert record["config_hash"] == grid.run_hash("toy", model, 0)
    # every model with torch weights has a digest
    assert (record["weights_sha256"] is None) == (model == "emb_knn")
    determinism = record["determinism"]
    assert determinism["deterministic_algorithms"] and determinism["torch_threads"] == 2
    metrics = read_json(folder / layout.METRICS)["test"]
    assert metrics["n_users"] == len(scored)
    for cutoff in CUTOFFS:
        for name in ("hr", "ndcg", "mrr", "recall", "coverage"):
            assert 0.0 <= metrics[f"{name}_at_{cutoff}"] <= 1.0, (model, name, cutoff)


@pytest.mark.parametrize("model", list(MODELS))
def test_two_processes_give_bit_identical_rankings_metrics_and_weights(two_runs, model):
    a, b = (grid.run_dir("toy", model, 0) for grid in two_runs)
    names = ["rankings_valid", "rankings_test", "per_user_valid", "per_user_test"]
    if MODELS[model].reads_requests:
        names.append("rankings_test_counterfactual")
    for name in names:
        pd.testing.assert_frame_equal(
            pd.read_parquet(a / f"{name}.parquet"),
            pd.read_parquet(b / f"{name}.parquet"),
            check_exact=True,
            obj=f"{model} {name}",
        )
    run_a, run_b = read_json(a / "run.json"), read_json(b / "run.json")
    assert run_a["weights_sha256"] == run_b["weights_sha256"]
    assert read_json(a / "metrics.json")["test"] == read_json(b / "metrics.json")["test"]
    hash_seeds = [run["determinism"]["python_hash_seed"] for run in (run_a, run_b)]
    assert hash_seeds == ["1", "2"]


def test_the_semantic_id_code_tables_are_bit_identical(two_runs):
    tables = [
        sorted((grid.grid_dir / "artifacts" / "toy" / "semantic_ids").glob("*/codes.npy"))
        for grid in two_runs
    ]
    assert len(tables[0]) == 2  # RQ-VAE codes and random codes
    for left, right in zip(*tables, strict=True):
        assert left.relative_to(two_runs[0].grid_dir) == right.relative_to(two_runs[1].grid_dir)
        assert (
            hashlib.sha256(left.read_bytes()).digest()
            == hashlib.sha256(right.read_bytes()).digest()
        )

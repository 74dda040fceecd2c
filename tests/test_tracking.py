"""MLflow mirroring: parallel writers on one SQLite store, no duplicates on rerun."""

import multiprocessing as mp

import pytest
import yaml

from llm4rec.config import load_grid
from llm4rec.io import write_json
from llm4rec.models import flat
from llm4rec.tracking import run_metrics

from .helpers.grid import MODELS


def fake_run(grid, model: str, ndcg: float) -> None:
    """A finished, evaluated run as the train and evaluate stages would leave it."""
    run_dir = grid.run_dir("ml-100k", model, 0)
    phase = {"ndcg_at_10": ndcg, "hr_at_10": 2 * ndcg, "coverage_at_10": 0.5}
    cost = {
        "train_time_s": 1.0,
        "inference_ms_per_user": 0.1,
        "inference_time_test_s": 0.1,
        "peak_memory_mb": 100.0,
        "parameters_total": 10,
        "parameters_trainable": 10,
    }
    write_json(
        run_dir / "metrics.json",
        {
            "dataset": "ml-100k",
            "model": model,
            "paradigm": "baseline",
            "seed": 0,
            "config_hash": "abc",
            "cost": cost,
            "valid": phase,
            "test": phase,
        },
    )
    write_json(
        run_dir / "run.json",
        {
            "run": grid.run_config("ml-100k", model, 0),
            "config_hash": "abc",
            "fit": {},
            "device": "cpu",
            "environment": {"git_commit": "deadbeef"},
            "cost": cost,
        },
    )


def log_in_subprocess(config_path: str, model: str) -> str:
    from llm4rec.tracking import log_run

    return log_run(load_grid(config_path), "ml-100k", model, 0)["run_id"]


def make_grid(tmp_path):
    cfg = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "seeds": [0],
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": [{"name": "bpr"}, {"name": "lightgcn"}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, load_grid(path)


def test_parallel_writers_and_idempotent_rerun(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, grid = make_grid(tmp_path)
    fake_run(grid, "bpr", 0.1)
    fake_run(grid, "lightgcn", 0.2)
    with mp.get_context("spawn").Pool(2) as pool:
        ids = pool.starmap(log_in_subprocess, [(str(path), "bpr"), (str(path), "lightgcn")])
    assert len(set(ids)) == 2

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=grid.tracking_uri())
    experiment = client.get_experiment_by_name("llm4rec-t")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags["model"]: r.data.metrics["test_ndcg_at_10"] for r in runs} == {
        "bpr": 0.1,
        "lightgcn": 0.2,
    }

    # same result again: reuse the run; a changed result: replace it (one live run per key)
    assert log_in_subprocess(str(path), "bpr") == ids[0]
    fake_run(grid, "bpr", 0.3)
    new_id = log_in_subprocess(str(path), "bpr")
    assert new_id != ids[0]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.metrics["test_ndcg_at_10"] for r in runs) == [0.2, 0.3]
    assert client.get_run(ids[0]).info.lifecycle_stage == "deleted"


@pytest.mark.slow
def test_the_report_reads_mlflow_runs_as_the_run_folders_they_mirror(finished_ml100k, tmp_path):
    """download_runs brings each logged run of the finished grid back as a run folder the report
    reads like the original: metrics, record and per-user scores."""
    from llm4rec.report.runs import runs_from_folders
    from llm4rec.tracking import download_runs

    grid = finished_ml100k.grid
    store = finished_ml100k.store
    folders = download_runs(store, grid.experiment, tmp_path / "down", {"seed": "0"})
    downloaded = {run.model: run for run in runs_from_folders(folders)}
    assert sorted(downloaded) == sorted(MODELS)
    for model, run in downloaded.items():
        (original,) = runs_from_folders([grid.run_dir("ml-100k", model, 0)])
        assert (run.dataset, run.seed) == ("ml-100k", 0)
        assert run.metrics == original.metrics and run.run == original.run, model
        assert run.per_user().equals(original.per_user()), model
        assert len(run.per_user()) == 943  # every test user


def test_a_runs_params_come_from_its_folder_not_from_todays_grid(tmp_path, monkeypatch):
    """What MLflow shows for a run is derived from its run.json: a grid YAML edited after training
    (other params for the model, another model of its paradigm) changes none of its params."""
    from mlflow.tracking import MlflowClient

    from llm4rec import layout
    from llm4rec.io import read_json
    from llm4rec.tracking import log_run, run_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, _ = make_grid(tmp_path)
    trained = yaml.safe_load(path.read_text())
    trained["models"] = [{"name": "bpr", "params": {"embedding_size": 16}}]
    path.write_text(yaml.safe_dump(trained))
    fake_run(load_grid(path), "bpr", 0.1)
    run = read_json(load_grid(path).run_dir("ml-100k", "bpr", 0) / layout.RUN_JSON)
    expected, _ = run_params(run)
    assert expected["hp.embedding_size"] == "16" and expected["hp.n_layers"] == "n/a"

    today = trained | {
        "models": [{"name": "bpr", "params": {"embedding_size": 128}}, {"name": "sasrec"}]
    }
    path.write_text(yaml.safe_dump(today))
    grid = load_grid(path)
    run_id = log_run(grid, "ml-100k", "bpr", 0)["run_id"]
    logged = MlflowClient(tracking_uri=grid.tracking_uri()).get_run(run_id).data.params
    assert logged == expected


def test_only_tracking_uses_the_mlflow_client():
    """tracking.py is the one module that imports mlflow (others may run the mlflow server)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    importers = sorted(
        str(f.relative_to(root))
        for f in [*root.glob("llm4rec/**/*.py"), *root.glob("baselines/**/*.py")]
        if re.search(r"^\s*(import mlflow|from mlflow)", f.read_text(), re.MULTILINE)
    )
    assert importers == ["llm4rec/tracking.py"]


def test_metric_keys_and_flattened_params():
    metrics = {
        "test": {"ndcg_at_10": 0.5},
        "valid": {"ndcg_at_10": 0.4},
        "cost": {
            k: 1
            for k in (
                "train_time_s",
                "inference_ms_per_user",
                "inference_time_test_s",
                "peak_memory_mb",
                "parameters_total",
                "parameters_trainable",
            )
        },
    }
    keys = run_metrics(metrics)
    assert (
        keys["test_ndcg_at_10"] == 0.5
        and keys["valid_ndcg_at_10"] == 0.4
        and "train_time_s" in keys
    )
    assert flat({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": 1, "a.c": [1, 2]}


def test_secret_looking_environment_variables_are_never_recorded(tmp_path, monkeypatch):
    """A real train -> evaluate -> track of MostPop with credentials in the environment, under the
    prefixes a run records (HF_, MLFLOW_, LLM4REC_, SLURM_JOB_): the record keeps the variables that
    shape results (OMP_NUM_THREADS) and none of the secrets, in run.json (also MLflow's copy) or in
    MLflow params and tags."""
    import json

    from mlflow.tracking import MlflowClient

    from llm4rec.cli import main

    secrets = {
        "HF_TOKEN": "hf_s3cr3t_token",
        "MLFLOW_TRACKING_PASSWORD": "pw-s3cr3t",
        "LLM4REC_API_KEY": "key-s3cr3t",
        "SLURM_JOB_SECRET": "slurm-s3cr3t",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "seeds": [0],
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": [{"name": "mostpop"}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = ["--config", str(path), "--dataset", "ml-100k"]
    assert main(["prepare", *args]) == 0
    for command in ("train", "evaluate", "track"):
        assert main([command, *args, "--model", "mostpop", "--seed", "0"]) == 0, command
    run_dir = load_grid(path).run_dir("ml-100k", "mostpop", 0)
    record = (run_dir / "run.json").read_text()
    assert json.loads(record)["environment"]["variables"]["OMP_NUM_THREADS"] == "1"
    client = MlflowClient(tracking_uri=load_grid(path).tracking_uri())
    mlrun = client.get_run(json.loads((run_dir / "mlflow.json").read_text())["run_id"])
    logged = json.dumps({"params": mlrun.data.params, "tags": mlrun.data.tags})
    assert mlrun.data.tags["model"] == "mostpop"
    for name, value in secrets.items():
        assert value not in record and name not in record, name
        assert value not in logged and name not in logged, name


def test_every_torch_load_reads_weights_only():
    """Every torch.load in the code base refuses pickled code (weights_only=True)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    calls = [
        (f, m.group(0))
        for f in [*root.glob("llm4rec/**/*.py"), *root.glob("baselines/**/*.py")]
        for m in re.finditer(r"torch\.load\([^)]*\)", f.read_text())
    ]
    assert calls  # the checkpoint loaders are found
    assert all("weights_only=True" in call for _, call in calls), [
        c for c in calls if "weights_only=True" not in c[1]
    ]


def test_training_curves_are_step_series_from_the_run_record():
    """SFT losses by optimiser step (a resumed run's after its checkpoint), the validation curve
    and an RL stage's per-step figures, each at its own step."""
    from llm4rec.tracking import training_curves

    run = {
        "run": {"params": {"sft": {"steps": 5}}},
        "fit": {
            "sft_losses": [0.9, 0.7],  # resumed at step 3
            "valid_curve": [{"step": 2, "ndcg_at_10": 0.1}, {"step": 5, "ndcg_at_10": 0.2}],
            "grpo_log": [{"step": 1, "reward": 0.5, "kl": 0.0}, {"step": 2, "reward": 0.25}],
        },
    }
    assert sorted(training_curves(run)) == sorted(
        [
            ("curve.train_loss", 0.9, 4),
            ("curve.train_loss", 0.7, 5),
            ("curve.valid_ndcg_at_10", 0.1, 2),
            ("curve.valid_ndcg_at_10", 0.2, 5),
            ("curve.grpo.reward", 0.5, 1),
            ("curve.grpo.kl", 0.0, 1),
            ("curve.grpo.reward", 0.25, 2),
        ]
    )
    assert training_curves({"fit": {}}) == []
    recbole = {"fit": {"valid_curve": [{"evaluation": 1, "ndcg_at_10": 0.3}]}}
    assert training_curves(recbole) == [("curve.valid_ndcg_at_10", 0.3, 1)]
    by_epoch = {  # AlphaRec: one loss and one validation score per epoch
        "fit": {
            "epoch_losses": [4.2, 3.9],
            "valid_curve": [{"epoch": 1, "ndcg_at_10": 0.05}, {"epoch": 2, "ndcg_at_10": 0.06}],
        }
    }
    assert sorted(training_curves(by_epoch)) == [
        ("curve.train_loss", 3.9, 2),
        ("curve.train_loss", 4.2, 1),
        ("curve.valid_ndcg_at_10", 0.05, 1),
        ("curve.valid_ndcg_at_10", 0.06, 2),
    ]

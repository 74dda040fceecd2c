"""What a researcher meets in MLflow (issue 13), asked through MLflow's REST API on the finished
ml-100k grid the workflow tests share (tests/helpers/grid.py): the experiment's kind, the params
(the chosen set, one key set per paradigm), the dataset input (the split's digest), run start/end
times that span the real training, and artifact links that survive moving results/."""

import hashlib
import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from llm4rec.config import load_grid
from llm4rec.models import MODELS as REGISTRY
from llm4rec.tracking import _is_hyperparameter, hyperparameters, paradigm_param_keys, run_params

from .helpers.grid import MODELS


@pytest.fixture(scope="module")
def served(finished_ml100k, tmp_path_factory):
    """The experiment and its runs as MLflow's REST API serves them."""
    from llm4rec.ui_check import experiment_runs, mlflow_ui, rest

    grid = finished_ml100k.grid
    with mlflow_ui(finished_ml100k.store, tmp_path_factory.mktemp("ui") / "ui.log") as base:
        experiment = rest(
            base, "experiments/get-by-name", query={"experiment_name": grid.experiment}
        )["experiment"]
        _, runs = experiment_runs(base, grid.experiment)
    return experiment, {
        next(p["value"] for p in r["data"]["params"] if p["key"] == "model"): r for r in runs
    }


def params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"]["params"]}


@pytest.mark.slow
def test_the_experiment_is_a_model_training_experiment(served):
    experiment, _ = served
    tags = {t["key"]: t["value"] for t in experiment["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_params_are_the_chosen_set_with_one_key_set_per_paradigm(served):
    _, runs = served
    assert set(runs) == set(MODELS)
    keys = {model: set(params(run)) for model, run in runs.items()}
    # one paradigm (baseline): columns line up
    assert keys["mostpop"] == keys["bpr"] == keys["sasrec"] == keys["emb_knn"]
    # the grid sets BPR's show_progress, a display flag: in resolved_config.json, not a column
    assert "hp.show_progress" not in keys["bpr"]
    for key in keys["bpr"]:  # RecBole's resolved internals are not params
        assert (
            not key.startswith("resolved.") and "_FIELD" not in key and key != "benchmark_filename"
        ), key
    # every registered baseline's own hyper-parameters (each at its defaults), no more: RecBole's
    # resolved config adds values, never keys
    own = set()
    for name, spec in REGISTRY.items():
        if spec.paradigm == "baseline":
            own |= {f"hp.{k}" for k in hyperparameters(name, {}, None) if _is_hyperparameter(k)}
    assert {k for k in keys["bpr"] if k.startswith("hp.")} == own
    assert {"hp.embedding_size", "hp.block", "hp.negatives"} <= own  # BPR's and SASRec's
    bpr, pop, knn = params(runs["bpr"]), params(runs["mostpop"]), params(runs["emb_knn"])
    assert (bpr["model"], bpr["display_name"], bpr["dataset"], bpr["seed"]) == (
        "bpr",
        "BPR",
        "ml-100k",
        "0",
    )
    assert bpr["hp.epochs"] == "2"  # chosen in the grid
    # RecBole's default (properties/model/BPR.yaml), as RecBole resolved it
    assert bpr["hp.embedding_size"] == "64"
    assert (
        pop["hp.embedding_size"] == "n/a" and bpr["hp.recent"] == "n/a" and knn["hp.recent"] == "0"
    )
    assert knn["inputs.embeddings"] == "bpr (seed 0)" and bpr["inputs.embeddings"] == "n/a"
    assert bpr["budget.train"].startswith("2 epochs") and bpr["budget.test_users"] == "all"


@pytest.mark.slow
def test_resolved_configs_are_an_artifact(served, finished_ml100k, tmp_path):
    from mlflow.tracking import MlflowClient

    _, runs = served
    client = MlflowClient(tracking_uri=finished_ml100k.store)
    path = client.download_artifacts(
        runs["bpr"]["info"]["run_id"], "resolved_config.json", str(tmp_path)
    )
    record = json.loads(Path(path).read_text())
    assert record["library_config"]["USER_ID_FIELD"] == "user_id"  # RecBole's internals live here
    assert record["hyperparameters"]["epochs"] == 2


@pytest.mark.slow
def test_the_split_is_the_runs_dataset_input(served, finished_ml100k):
    _, runs = served
    grid = finished_ml100k.grid
    split = json.loads((grid.split_dir("ml-100k") / "split.json").read_text())
    # independently: sha256 over "name=sha256" lines of split.json's checksums, sorted by name
    text = "".join(f"{name}={split['checksums'][name]}\n" for name in sorted(split["checksums"]))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    for run in runs.values():
        (entry,) = run["inputs"]["dataset_inputs"]
        dataset = entry["dataset"]
        assert (dataset["name"], dataset["digest"]) == ("ml-100k", digest)
        assert json.loads(dataset["source"])["uri"] == grid.split_dir("ml-100k").resolve().as_uri()
        assert json.loads(dataset["profile"])["users"] == split["stats"]["users"]


@pytest.mark.slow
def test_run_start_and_end_span_the_real_training_and_ranking(served, finished_ml100k):
    _, runs = served
    split = finished_ml100k.results / "e2e" / "data" / "ml-100k" / "split.json"
    for model, run in runs.items():
        start, end = run["info"]["start_time"] / 1000, run["info"]["end_time"] / 1000
        folder = finished_ml100k.runs / model / "seed0"
        record = json.loads((folder / "run.json").read_text())
        # the train command's own clock (training, then ranking), not the time it was logged: after
        # the split was prepared, before the train job wrote its record and the track job logged it
        assert (start, end) == (
            int(1000 * record["timing"]["train_start"]) / 1000,
            int(1000 * record["timing"]["rank_end"]) / 1000,
        ), model
        assert finished_ml100k.started <= split.stat().st_mtime <= start + 1e-3, model
        assert (
            end <= (folder / "run.json").stat().st_mtime <= (folder / "mlflow.json").stat().st_mtime
        )
        assert end - start >= record["cost"]["train_time_s"] - 1e-3, model


@pytest.mark.slow
def test_moving_results_keeps_artifact_links_after_relocate(finished_ml100k, tmp_path):
    from mlflow.tracking import MlflowClient

    from llm4rec.cli import main

    old = finished_ml100k.results
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(old, moved)
    client = MlflowClient(tracking_uri=f"sqlite:///{moved / 'mlflow.db'}")
    run_id = json.loads(
        (moved / "e2e" / "runs" / "ml-100k" / "bpr" / "seed0" / "mlflow.json").read_text()
    )["run_id"]

    def linked_to(results) -> bool:
        run = client.get_run(run_id)
        uri = results.resolve().as_uri()
        source = run.inputs.dataset_inputs[0].dataset.source
        return run.info.artifact_uri.startswith(uri) and source.startswith(f'{{"uri": "{uri}/')

    assert linked_to(old) and not linked_to(moved)  # the copy's links still point at the original
    assert main(["relocate-store", "--results", str(moved)]) == 0
    assert linked_to(moved) and not linked_to(old)
    folder = Path(urlparse(client.get_run(run_id).info.artifact_uri).path)
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"run.json", "metrics.json", "resolved_config.json"} <= names
    assert all((folder / name).exists() for name in names)
    assert main(["relocate-store", "--results", str(moved)]) == 0  # idempotent
    assert linked_to(moved)
    # the original store is as it was
    assert (
        MlflowClient(tracking_uri=f"sqlite:///{old / 'mlflow.db'}")
        .get_run(run_id)
        .info.artifact_uri.startswith(old.resolve().as_uri())
    )


def test_every_paradigm_logs_one_key_set_without_library_internals():
    """For every run of the paper grid (every registered model), the params of a paradigm's runs
    share one key set; the prompt text is one template id; the backbone is named."""
    grid = load_grid("benchmarks/paper.yaml")
    by_paradigm: dict[str, set[frozenset]] = {}
    for dataset, model, seed in grid.runs():
        config = grid.run_config(dataset, model, seed)
        logged, record = run_params(
            {"run": config, "fit": {}, "evaluation": config.get("evaluation", {})}
        )
        by_paradigm.setdefault(config["paradigm"], set()).add(frozenset(logged))
        assert set(logged) == set(paradigm_param_keys(config["paradigm"]))
        assert not any(
            k.startswith(("hp.prompt.", "hp.text_retention", "resolved.")) or k == "hp.prompt"
            for k in logged
        )
        # TIGER trains its own T5; a stage's backbone is its parent's (inputs.policy names it): an
        # RL stage, a steered, exact-ranking or cold-start row
        rl_stage = "policy" in REGISTRY[model].inputs
        # AlphaRec reads item-text embeddings (inputs.text names the encoder); it has no backbone.
        # RTA's frozen backbone runs in the llm_states artifact (inputs.states; run.json fit.states)
        if (
            config["paradigm"] not in ("baseline", "lm_representation", "reindexed")
            and model not in ("sid_tiger", "sid_random")
            and not rl_stage
        ):
            assert logged["backbone"] not in ("n/a", "") and logged["prompt_template"] != "n/a", (
                model
            )
            assert record["prompt_template"]  # the text behind the id
    assert {len(sets) for sets in by_paradigm.values()} == {1}
    assert len(by_paradigm) == 7


def test_a_different_prompt_is_a_different_template_id():
    from llm4rec.tracking import describe_run

    base = {
        "model": "text_prompted",
        "paradigm": "text_prompted",
        "dataset": "d",
        "seed": 0,
        "params": {},
    }
    other = base | {"params": {"prompt": {"user": "Items seen:\n{history}\nNext?"}}}
    assert describe_run(base)[0]["prompt_template"] != describe_run(other)[0]["prompt_template"]
    assert (
        describe_run(base)[0]["prompt_template"] == describe_run(dict(base))[0]["prompt_template"]
    )

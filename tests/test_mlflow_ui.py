"""What a researcher meets in MLflow (issue 13), asked through MLflow's REST API on a small grid
really trained: the experiment's kind, the params (the chosen set, one key set per paradigm), the
dataset input (the split's digest), run start/end times that span the real training, and artifact
links that survive moving results/."""

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from llm4rec.config import load_grid
from llm4rec.models import MODELS as REGISTRY
from llm4rec.tracking import _is_hyperparameter, hyperparameters, paradigm_param_keys, run_params

MODELS = ("mostpop", "bpr", "emb_knn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """MostPop, BPR (1 epoch), Emb-kNN (over BPR) trained, evaluated, tracked; times per run."""
    from llm4rec.cli import main

    root = tmp_path_factory.mktemp("ui")
    cfg = {
        "name": "t",
        "results_dir": str(root / "results"),
        "seeds": [0],
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": [
            {"name": "mostpop"},
            {"name": "bpr", "params": {"epochs": 1}},
            {"name": "emb_knn"},
        ],
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = ["--config", str(path), "--dataset", "ml-100k"]
    assert main(["prepare", *args]) == 0
    bounds = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for model in MODELS:
            before = time.time()
            assert main(["train", *args, "--model", model, "--seed", "0"]) == 0
            bounds[model] = (before, time.time())
            assert main(["evaluate", *args, "--model", model, "--seed", "0"]) == 0
            assert main(["track", *args, "--model", model, "--seed", "0"]) == 0
    return load_grid(path), bounds


@pytest.fixture(scope="module")
def served(trained):
    """The experiment and its runs as MLflow's REST API serves them."""
    from llm4rec.ui_check import experiment_runs, mlflow_ui, rest

    grid, _ = trained
    with mlflow_ui(grid.tracking_uri(), grid.results_dir / "ui.log") as base:
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
    assert keys["mostpop"] == keys["bpr"] == keys["emb_knn"]
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
    assert bpr["hp.epochs"] == "1"  # chosen in the grid
    # RecBole's default (properties/model/BPR.yaml), as RecBole resolved it
    assert bpr["hp.embedding_size"] == "64"
    assert (
        pop["hp.embedding_size"] == "n/a" and bpr["hp.recent"] == "n/a" and knn["hp.recent"] == "0"
    )
    assert knn["inputs.embeddings"] == "bpr (seed 0)" and bpr["inputs.embeddings"] == "n/a"
    assert bpr["budget.train"].startswith("1 epoch") and bpr["budget.test_users"] == "all"


@pytest.mark.slow
def test_resolved_configs_are_an_artifact(served, trained):
    from mlflow.tracking import MlflowClient

    _, runs = served
    grid, _ = trained
    client = MlflowClient(tracking_uri=grid.tracking_uri())
    path = client.download_artifacts(
        runs["bpr"]["info"]["run_id"], "resolved_config.json", str(grid.results_dir)
    )
    record = json.loads(Path(path).read_text())
    assert record["library_config"]["USER_ID_FIELD"] == "user_id"  # RecBole's internals live here
    assert record["hyperparameters"]["epochs"] == 1


@pytest.mark.slow
def test_the_split_is_the_runs_dataset_input(served, trained):
    _, runs = served
    grid, _ = trained
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
def test_run_start_and_end_span_the_real_training_and_ranking(served, trained):
    _, runs = served
    grid, bounds = trained
    for model, run in runs.items():
        start, end = run["info"]["start_time"] / 1000, run["info"]["end_time"] / 1000
        before, after = bounds[model]
        record = json.loads((grid.run_dir("ml-100k", model, 0) / "run.json").read_text())
        # inside the train command, not at logging time
        assert before <= start <= end <= after, model
        assert end - start >= record["cost"]["train_time_s"] - 1e-3, model


@pytest.mark.slow
def test_moving_results_keeps_artifact_links_after_relocate(trained, tmp_path):
    from mlflow.tracking import MlflowClient

    from llm4rec.cli import main

    grid, _ = trained
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(grid.results_dir, moved)
    stale = grid.results_dir.with_name("results-hidden")
    grid.results_dir.rename(stale)  # the old location is gone
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{moved / 'mlflow.db'}")
        run_id = json.loads(
            (moved / "t" / "runs" / "ml-100k" / "bpr" / "seed0" / "mlflow.json").read_text()
        )["run_id"]
        assert client.list_artifacts(run_id) == []  # the links still point at the old folder
        assert main(["relocate-store", "--results", str(moved)]) == 0
        names = {a.path for a in client.list_artifacts(run_id)}
        assert {"run.json", "metrics.json", "resolved_config.json"} <= names
        assert (
            client.get_run(run_id)
            .inputs.dataset_inputs[0]
            .dataset.source.startswith(f'{{"uri": "{moved.resolve().as_uri()}/')
        )
        assert main(["relocate-store", "--results", str(moved)]) == 0  # idempotent
    finally:
        stale.rename(grid.results_dir)


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

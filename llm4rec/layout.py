"""The results folder's layout, named once: every stage, tracking, reproduce and the Snakefile
find a file by these names.

    <results_dir>/
        mlflow.db, mlartifacts/            the local MLflow store (no tracking server named)
        <grid>/
            data/<dataset>/                the split: interactions.parquet, items.parquet,
                                           split.json (last; it holds the other two's sha256)
            artifacts/<dataset>/<name>/<key>/
                                           one artifact's files, artifact.json last
            runs/<dataset>/<model>/seed<N>/
                                           one run (below)
            text_retention/                the pinned text-retention samples, shipped along
            logs/                          the Snakemake jobs' logs
            report_mlflow.json             the report's MLflow run (ablations_report_mlflow.json:
                                           the ablation report's)

A run folder, by the stage that writes it (each stage's record last, so its presence means the
stage finished):

    train      rankings_valid.parquet, rankings_test.parquet, exports/ (what other runs consume),
               work/ (checkpoints), run.json; a model that reads requests also
               rankings_test_counterfactual.parquet
    evaluate   per_user_valid.parquet, per_user_test.parquet, metrics.json
    track      mlflow.json (the MLflow run id)
"""

from __future__ import annotations

from pathlib import Path

PHASES = ("valid", "test")  # the ranked phases; each has a rankings and a per-user file

# -- a run folder -------------------------------------------------------------------------------
RUN_JSON = "run.json"  # train's record: the run config, its hash, costs, environment
METRICS = "metrics.json"  # evaluate's record: mean metrics per phase, costs
MLFLOW_JSON = "mlflow.json"  # track's record: the MLflow run id
EXPORTS = "exports"  # folder: files other runs consume (item embeddings, ...)
WORK = "work"  # folder: training's scratch and checkpoints


def rankings(phase: str) -> str:
    """The top-K lists of one phase's users (train)."""
    return f"rankings_{phase}.parquet"


def per_user(phase: str) -> str:
    """Every metric of each of one phase's users (evaluate)."""
    return f"per_user_{phase}.parquet"


# a model that reads requests also ranks the test users with counterfactual requests (requests
# that do not come from the target: llm4rec.evaluation.steerability); the steer table reads this
# file
COUNTERFACTUAL_RANKINGS = "rankings_test_counterfactual.parquet"
TRAIN_FILES = (*(rankings(p) for p in PHASES), RUN_JSON)  # plus the EXPORTS folder
EVALUATE_FILES = (*(per_user(p) for p in PHASES), METRICS)
# a finished run's record (MLflow keeps a copy); the counterfactual rankings where a run has them
RUN_FILES = TRAIN_FILES + (COUNTERFACTUAL_RANKINGS,) + EVALUATE_FILES

# -- a grid folder ------------------------------------------------------------------------------
SPLIT_INTERACTIONS, SPLIT_ITEMS, SPLIT_JSON = "interactions.parquet", "items.parquet", "split.json"
SPLIT_FILES = (SPLIT_INTERACTIONS, SPLIT_ITEMS, SPLIT_JSON)
ARTIFACT_JSON = "artifact.json"
TEXT_RETENTION = "text_retention"
LOGS = "logs"
REPORT_MLFLOW_JSON = "report_mlflow.json"  # the main report's MLflow run


def report_marker(grid_dir: str | Path, kind: str = "main") -> Path:
    """A report kind's record of its MLflow run (report_mlflow.json,
    ablations_report_mlflow.json)."""
    prefix = "" if kind == "main" else f"{kind}_"
    return Path(grid_dir) / f"{prefix}{REPORT_MLFLOW_JSON}"


# -- the local MLflow store, beside the grids -----------------------------------------------------
LOCAL_STORE = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
STORE_LOCK = ".mlflow.lock"  # serialises writers to the store


RUN_GLOB = "*/*/seed*"  # every run folder below a grid's runs/ folder


def seed_folder(seed: int) -> str:
    return f"seed{seed}"


def runs_dir(grid_dir: str | Path) -> Path:
    return Path(grid_dir) / "runs"


def run_dir(grid_dir: str | Path, dataset: str, model: str, seed: int) -> Path:
    return runs_dir(grid_dir) / dataset / model / seed_folder(seed)


def grid_dir_of_run(run_folder: str | Path) -> Path:
    """The grid folder a run folder lives in (`run_dir`'s inverse)."""
    return Path(run_folder).parents[3]


def split_dir(grid_dir: str | Path, dataset: str) -> Path:
    return Path(grid_dir) / "data" / dataset


def artifact_dir(grid_dir: str | Path, dataset: str, name: str, key: str) -> Path:
    return Path(grid_dir) / "artifacts" / dataset / name / key

"""The one finished ml-100k grid the workflow, MLflow, tracking and results-page tests share.

`finished_ml100k` (tests/conftest.py, session scope) runs it once through Snakemake: MostPop, BPR
(2 epochs), a tiny SASRec and `emb_knn` over BPR's exported embeddings, seed 0, with its reports.
Tests read it and never change it; a test that reruns, deletes or adds runs works on
`copy_of(grid, folder)`, whose MLflow store is relocated to the copy. `small_grid` is its skeleton,
which the grids of the cluster, tracking-server and fault tests share.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import snakemake_command

NAME = "e2e"


def small_grid(
    name: str, models: list[dict], rounds: tuple[int, int] = (200, 200), **evaluation
) -> dict:
    """A grid on ml-100k at seed 0 run in its working directory (results/, reports/), scored at
    cutoffs 5 and 10 (and what `evaluation` adds), reporting HR@10 and NDCG@10 with `rounds`
    (randomization, bootstrap) rounds."""
    return {
        "name": name,
        "results_dir": "results",
        "reports_dir": "reports",
        "seeds": [0],
        "evaluation": {"cutoffs": [5, 10], **evaluation},
        "report": {
            "metrics": ["hr_at_10", "ndcg_at_10"],
            "randomization_rounds": rounds[0],
            "bootstrap_rounds": rounds[1],
        },
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": models,
    }


GRID = small_grid(
    NAME,
    [
        {"name": "mostpop"},
        {"name": "bpr", "params": {"epochs": 2, "learning_rate": 0.01, "show_progress": False}},
        {
            "name": "sasrec",
            "params": {
                "epochs": 2,
                "max_len": 5,
                "hidden_size": 16,
                "inner_size": 32,
                "n_layers": 1,
                "batch_size": 256,
            },
        },
        # consumes bpr's exported item embeddings (same dataset and seed)
        {"name": "emb_knn"},
    ],
    rounds=(1000, 500),
)
MODELS = ("mostpop", "bpr", "sasrec", "emb_knn")


@dataclass(frozen=True)
class FinishedGrid:
    """A grid Snakemake ran to the end in `workdir` (grid.yaml, results/, reports/), between the
    wall-clock times `started` and `finished`; `output` is Snakemake's log of that run."""

    workdir: Path
    output: str
    started: float
    finished: float

    @property
    def config(self) -> Path:
        return self.workdir / "grid.yaml"

    @property
    def grid(self):
        """The grid as the jobs read it in `workdir` (its folders made absolute, for any cwd)."""
        from llm4rec.config import validate_grid

        folders = {"results_dir": str(self.results), "reports_dir": str(self.reports)}
        return validate_grid(yaml.safe_load(self.config.read_text()) | folders, self.config)

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    @property
    def store(self) -> str:
        """The grid's own MLflow store (what its track jobs wrote to, whatever
        MLFLOW_TRACKING_URI says in the test's environment)."""
        return f"sqlite:///{self.results / 'mlflow.db'}"

    @property
    def runs(self) -> Path:
        """The runs folder of ml-100k: <model>/seed0/."""
        return self.results / NAME / "runs" / "ml-100k"

    @property
    def reports(self) -> Path:
        return self.workdir / "reports"


def snakemake_run(
    workdir: Path, *args: str, grid: str = "grid.yaml"
) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` on its grid file with two cores and one MLflow writer."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [
        *snakemake_command(workdir, workdir / grid),
        "--cores",
        "2",
        "--resources",
        "mlflow=1",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def snakemake(workdir: Path, *args: str, grid: str = "grid.yaml") -> str:
    """`snakemake_run`, asserted to succeed: its log."""
    proc = snakemake_run(workdir, *args, grid=grid)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def run_grid(workdir: Path) -> FinishedGrid:
    """Write GRID to `workdir` and run it to the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "grid.yaml").write_text(yaml.safe_dump(GRID))
    started = time.time()
    output = snakemake(workdir)
    return FinishedGrid(workdir, output, started, time.time())


def copy_of(grid: FinishedGrid, folder: Path) -> FinishedGrid:
    """The finished grid copied to `folder` (file times kept: Snakemake sees it finished) with its
    MLflow store's artifact links relocated there: changing the copy leaves the original alone."""
    from llm4rec.cli import main

    shutil.copytree(grid.workdir, folder, symlinks=True)
    assert main(["relocate-store", "--results", str(folder / "results")]) == 0
    return FinishedGrid(folder, grid.output, grid.started, grid.finished)


def planned_jobs(output: str) -> dict[str, int]:
    """Snakemake's job counts by rule (a dry run's table), without the total."""
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", output, re.M)
        if m.group(1) != "total"
    }


def mlflow_runs(grid: FinishedGrid, report: bool = False):
    """The client on the grid's store and the experiment's live runs: the model runs, or (report)
    the report's."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=grid.store)
    experiment = client.get_experiment_by_name(f"llm4rec-{NAME}")
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if (r.data.tags.get("paradigm") == "report") == report]

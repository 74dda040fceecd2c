"""Finished runs as the report stage sees them, read from the results folder or from MLflow.

A finished run is a folder holding ``metrics.json``, ``run.json`` and ``per_user_test.parquet``
(written by the evaluate stage); MLflow runs carry the same files as artifacts, so both
sources give the same records and the same tables.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llm4rec import layout
from llm4rec.io import read_json


@dataclass(frozen=True)
class RunRecord:
    dataset: str
    model: str
    paradigm: str
    seed: int
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.model}/{self.dataset}/seed{self.seed}"

    @functools.cached_property
    def metrics(self) -> dict:
        return read_json(self.folder / layout.METRICS)

    @functools.cached_property
    def run(self) -> dict:
        return read_json(self.folder / layout.RUN_JSON)

    @property
    def split_checksums(self) -> dict:
        return self.run["split_checksums"]

    def per_user(self, phase: str = "test") -> pd.DataFrame:
        return pd.read_parquet(self.folder / layout.per_user(phase))


def runs_from_folders(folders: Iterable[str | Path]) -> list[RunRecord]:
    """Records for run folders (or their metrics.json paths) that finished evaluation."""
    records = []
    for folder in folders:
        folder = Path(folder)
        folder = folder.parent if folder.name == layout.METRICS else folder
        if not (folder / layout.METRICS).is_file():
            continue
        m = read_json(folder / layout.METRICS)
        records.append(RunRecord(m["dataset"], m["model"], m["paradigm"], int(m["seed"]), folder))
    return sorted(records, key=lambda r: (r.dataset, r.model, r.seed))


def runs_from_results(runs_dir: str | Path) -> list[RunRecord]:
    """Every finished run below a grid's runs folder (<dataset>/<model>/seed<N>/)."""
    return runs_from_folders(sorted(Path(runs_dir).glob(f"{layout.RUN_GLOB}/{layout.METRICS}")))


def runs_from_mlflow(
    tracking_uri: str, experiment: str, dest: str | Path, tags: dict[str, str] | None = None
) -> list[RunRecord]:
    """Download the evaluated runs of an MLflow experiment (filtered by tags) into `dest`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"MLflow store {tracking_uri}: no experiment named '{experiment}'")
    clauses = ["tags.`llm4rec.run_key` != ''"] + [
        f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()
    ]
    folders = []
    for mlrun in client.search_runs(
        [found.experiment_id], " and ".join(clauses), max_results=10_000
    ):
        tags_ = mlrun.data.tags
        if tags_.get("paradigm") == "report":
            continue
        folder = Path(dest) / tags_["dataset"] / tags_["model"] / f"seed{tags_['seed']}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", "run.json", "per_user_test.parquet", "per_user_valid.parquet"):
            client.download_artifacts(mlrun.info.run_id, name, str(folder))
        folders.append(folder)
    return runs_from_folders(folders)

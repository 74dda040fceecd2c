"""Finished runs as the report stage sees them: run folders.

A finished run is a folder holding ``metrics.json``, ``run.json`` and ``per_user_test.parquet``
(written by the evaluate stage). MLflow runs carry the same files as artifacts;
``llm4rec.tracking.download_runs`` brings them into folders, so both sources give the same
records and the same tables.
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

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

    @functools.cached_property
    def split_meta(self) -> dict:
        """Its split's split.json (the grid's data/<dataset>/ beside runs/), or {} for a run folder
        outside a grid's layout."""
        if len(self.folder.parents) < 4:
            return {}
        path = self.folder.parents[3] / "data" / self.dataset / layout.SPLIT_JSON
        return read_json(path) if path.is_file() else {}

    @property
    def split_stats(self) -> dict:
        """Its split's counts (split.json `stats`), or {}."""
        return self.split_meta.get("stats", {})

    @property
    def reads_requests(self) -> bool:
        """It ranked with a request per user (its metrics.json records the template): compared only
        in the steer table, never in an accuracy table beside rows that cannot read one."""
        return bool(self.metrics.get("evaluation", {}).get("requests"))

    @property
    def notes(self) -> list[str]:
        """What its training says the tables must print beside it (fit's `notes`: RTA's chosen
        gate, AlphaRec's intention weight)."""
        return [str(n) for n in self.run.get("fit", {}).get("notes", [])]

    @property
    def convergence(self) -> str:
        """Its convergence verdict (llm4rec.evaluation.convergence): run.json's, or read from its
        validation curve for a run recorded before the verdict was."""
        from llm4rec.evaluation.convergence import run_convergence

        recorded = self.run.get("convergence")
        if recorded:
            return recorded["verdict"]
        fit = self.run.get("fit", {})
        trainable = self.metrics.get("cost", {}).get("parameters_trainable")
        metric = self.run.get("selection_metric", "ndcg_at_10")
        return run_convergence(fit, metric, trainable)["verdict"]

    def consumed_run(self, slot: str) -> str | None:
        """The model whose run it consumed through input `slot` (its run config's inputs)."""
        source = self.run.get("run", {}).get("inputs", {}).get(slot, {})
        return source.get("run")


def accuracy_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """The runs an accuracy table may hold: every run that ranked without a request."""
    return [r for r in runs if not r.reads_requests]


def refuse_request_rows(runs: Iterable[RunRecord], what: str) -> None:
    """An accuracy table never sets a row that read the request (written from the target) beside
    rows that could not: raise naming it."""
    readers = sorted({r.model for r in runs if r.reads_requests})
    if readers:
        raise ValueError(
            f"{what}: {', '.join(readers)} ranked with each user's request (written from the "
            "target), so its accuracy is not comparable with rows that cannot read one; it belongs "
            "in the steer table (pass accuracy_runs(runs))"
        )


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

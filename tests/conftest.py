"""Shared fixtures: tiny datasets built in code, and the one finished ml-100k grid."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd
import pytest

from llm4rec.data.split import Split, leave_one_out_split

SHARED_GRID = "finished_ml100k"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Two test workers of two torch threads share two cores: OpenMP threads that spin while they wait
# take the cores from the other worker's (the same results, several times slower; test_rerun.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def interactions_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """(user, item, timestamp) rows -> canonical interactions (order = row position)."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["rating"] = 1.0
    df["order"] = range(len(df))
    return df


@pytest.fixture
def tiny_split() -> Split:
    """3 users, 6 items; user u1: a b c d, u2: b c e, u3: a e f b (by time)."""
    rows = [
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u1", "c", 3),
        ("u1", "d", 4),
        ("u2", "b", 1),
        ("u2", "c", 2),
        ("u2", "e", 3),
        ("u3", "a", 1),
        ("u3", "e", 2),
        ("u3", "f", 3),
        ("u3", "b", 4),
    ]
    labelled = leave_one_out_split(interactions_frame(rows))
    items = pd.DataFrame(
        {
            "item_id": list("abcdef"),
            "title": list("ABCDEF"),
            "year": "",
            "genres": "",
            "description": "",
        }
    )
    inter = labelled[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True)
    return Split(inter, items, {"checksums": {}})


@pytest.fixture(scope="session")
def finished_ml100k(tmp_path_factory):
    """The workflow, MLflow, tracking and results-page tests' finished grid (a FinishedGrid of
    tests/helpers/grid.py), run once per test session: read it, or change a `copy_of` it."""
    from .helpers.grid import run_grid  # torch and Snakemake's helpers: only where a test asks

    return run_grid(tmp_path_factory.mktemp("finished_ml100k"))


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (make test), with every test file that asks for the finished grid in one
    work unit: a worker runs one file at a time, as loadfile does, and the session fixture is built
    once, not once per worker. (Grouping by `xdist_group` marks, `--dist loadgroup`, does not group
    under pytest 9.2: pytest-xdist issue 1386.) The controller sees node ids, not fixtures: a file
    asks for the grid when its source names the fixture."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedGridScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_GRID if _asks_for_shared_grid(self.config.rootpath / path) else path

    return SharedGridScheduling(config, log)


@functools.cache
def _asks_for_shared_grid(file: Path) -> bool:
    return file.suffix == ".py" and file.is_file() and SHARED_GRID in file.read_text()

"""Shared fixtures: tiny datasets built in code."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from llm4rec.data.split import Split, leave_one_out_split

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

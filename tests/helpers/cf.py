"""The CF-injected tests' 16-item cyclic catalogue and its CF table (cf_injected, precision)."""

import numpy as np
import pandas as pd

from llm4rec.data.split import Split, leave_one_out_split

from ..conftest import interactions_frame

TITLES = [
    f"{c} {n}" for c in ("red", "blue", "green", "old") for n in ("car", "sky", "house", "train")
]


WORDS = sorted({w for t in TITLES for w in t.split()} | {"items", ":", "next", ";"})


def cyclic_split() -> Split:
    """16 users walk the 16-item catalogue cyclically from item u, 8 items each (user 0: 12)."""
    rows, n = [], len(TITLES)
    for u in range(n):
        rows += [(f"u{u}", str((u + t) % n), float(t)) for t in range(12 if u == 0 else 8)]
    labelled = leave_one_out_split(interactions_frame(rows))
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(n)],
            "title": TITLES,
            "year": "",
            "genres": "",
            "description": "",
        }
    )
    return Split(
        labelled[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True),
        items,
        {"checksums": {}},
    )


def cf_table(n: int = len(TITLES)) -> np.ndarray:
    """A CF embedding that knows the cycle: item i at angle 2*pi*i/n (plus two fixed noise dims)."""
    angle = 2 * np.pi * np.arange(n) / n
    noise = np.random.default_rng(0).normal(size=(n, 2)) * 0.1
    return np.column_stack(
        [np.cos(angle), np.sin(angle), np.cos(2 * angle), np.sin(2 * angle), noise]
    ).astype(np.float32)

"""The CF-injected tests' 16-item cyclic catalogue and its CF table (cf_injected, precision)."""

import numpy as np

from llm4rec.data.split import Split

from . import idiomoe

TITLES = idiomoe.TITLES
WORDS = sorted({w for t in TITLES for w in t.split()} | {"items", ":", "next", ";"})


def cyclic_split() -> Split:
    """16 users walk the 16-item catalogue cyclically from item u, 8 items each (user 0: 12)."""
    return idiomoe.cyclic_split([12] + [8] * (len(TITLES) - 1))


def cf_table(n: int = len(TITLES)) -> np.ndarray:
    """A CF embedding that knows the cycle: item i at angle 2*pi*i/n (plus two fixed noise dims)."""
    angle = 2 * np.pi * np.arange(n) / n
    noise = np.random.default_rng(0).normal(size=(n, 2)) * 0.1
    return np.column_stack(
        [np.cos(angle), np.sin(angle), np.cos(2 * angle), np.sin(2 * angle), noise]
    ).astype(np.float32)

"""Exact-ranking rows (`*_exact`; issue 29): what a generative run's beam leaves out.

A generative recommender ranks by catalogue-constrained beam search, which keeps the `beam_width`
most likely prefixes at each step and can drop an item whose full identifier is more likely than
some it keeps. The exact ranking, every catalogue item by the log-likelihood of its identifier
after the prompt, is the same search at a width covering the catalogue: no prefix is ever pruned
(a trie level never holds more prefixes than items), so it is exhaustive scoring, tested equal to
it (tests/test_llm_decoding.py).

An exact row consumes its parent run's exported weights (`policy`, llm4rec.llm.policy_export),
trains nothing, and ranks its users (a seeded sample drawn within its parent's, so every user of
the row is one its parent ranked) exactly; its rankings are evaluated like any run's, so the
ablation table sets its metric against the parent's beam on the same users, with the paired test.
For the users of each ranked phase it also ranks with the parent's own beam (the same weights:
the parent's lists) and reports, on the test phase, as declared cost figures (run.json `cost`,
MLflow, the cost table):

- `beam_overlap_at_k`: the mean over users of |beam top-K ∩ exact top-K| / K;
- `beam_miss_pct`: the share of users (%) whose beam top-K misses an item of the exact top-K.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, combined, parent_ranking
from llm4rec.evaluation.evaluate import rankings_to_lists
from llm4rec.llm.policy_export import PolicyStage, frozen_policy_facts, restore_policy
from llm4rec.models import BuildSpec, Histories


@dataclass(frozen=True)
class ExactConfig:
    width: int | None = None  # the exact search's beam width (None: the catalogue's size: exact)
    batch_users: int = 1  # users searched together (a catalogue-wide beam per user is large)

    def __post_init__(self) -> None:
        if self.width is not None and self.width < 1:
            raise ValueError(f"exact: width must be >= 1 or null, got {self.width}")
        if self.batch_users < 1:
            raise ValueError(f"exact: batch_users must be >= 1, got {self.batch_users}")


def beam_agreement(beam: pd.DataFrame, exact: pd.DataFrame, k: int) -> dict[str, float]:
    """Overlap@k of two rankings of the same users, and the share of users whose `beam` top-k
    misses an item of the `exact` top-k (`beam_overlap_at_k`, `beam_miss_pct`)."""
    a, b = rankings_to_lists(beam), rankings_to_lists(exact)
    if set(a) != set(b):
        raise ValueError(f"beam and exact rankings cover different users ({len(a)} vs {len(b)})")
    overlaps = np.array([len(set(a[u][:k]) & set(b[u][:k])) / k for u in sorted(a)])
    misses = np.array([not set(b[u][:k]) <= set(a[u][:k]) for u in sorted(a)])
    return {
        "beam_overlap_at_k": float(overlaps.mean()) if len(a) else float("nan"),
        "beam_miss_pct": 100.0 * float(misses.mean()) if len(a) else float("nan"),
    }


class ExactRecommender(PolicyStage):
    """The parent's generative recommender on its exported weights, ranking exactly (module
    doc)."""

    cfg: ExactConfig

    def __init__(self, spec: BuildSpec):
        super().__init__(spec)
        name = self.name
        if self.parent.one_forward:  # an item head (E4SRec, IDIOMoE): no beam to compare
            raise ValueError(
                f"{name}: the policy's model ({self.record['recommender']}) does not rank by beam "
                "search; an exact row needs a generative parent"
            )
        self.agreement: dict[str, float] = {}

    def fit(self, split: Split, workdir: Path) -> dict:
        parent = self.parent
        info, tensors = restore_policy(parent, split, self.policy)
        parent.model.requires_grad_(False).eval()
        self.beam = parent.cfg  # the parent's own search
        self.exact = dataclasses.replace(
            parent.cfg,
            beam_width=self.cfg.width or len(split.items),
            batch_users=self.cfg.batch_users,
        )
        return (
            info
            | frozen_policy_facts(parent, self.policy, self.record, tensors)
            | {
                "beam_width": self.beam.beam_width,
                "exact_width": self.exact.beam_width,
                "exact": self.exact.beam_width >= len(split.items),
            }
        )

    def rank(self, histories: Histories, k: int) -> pd.DataFrame:
        """The exact top-k; the parent's beam over the same users is searched too (its decoding
        counts are not the row's: only the exact search's are)."""
        parent = self.parent
        parent.cfg = self.beam
        beam = parent._rank_batches(histories, k)
        parent.inference_cost()  # the beam's counts: reset, not reported as this row's
        parent.cfg = self.exact
        exact = parent._rank_batches(histories, k)
        parent.cfg = self.beam
        self.agreement = beam_agreement(beam, exact, k)
        return exact

    def inference_cost(self) -> dict[str, float]:
        """The exact search's decoding counts, and the agreement of the phase just ranked."""
        return self.parent.inference_cost() | self.agreement


def build(spec: BuildSpec) -> ExactRecommender:
    return ExactRecommender(spec)


def estimate_cost(config: ExactConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: the parent's beam over this row's users, and the exact search (a beam as
    wide as the catalogue, or `width`) over the same users; nothing trained."""
    estimate, untrained = parent_ranking(cell)
    width = config.width or cell.stats["items"]
    exact = dataclasses.replace(untrained, beam_width=width, batch_users=config.batch_users)
    estimate = combined(estimate, cell.estimate(cell.policy_parent(), exact, cell.model))
    return dataclasses.replace(estimate, trainable=0)

"""TIGER's cold-start retrieval (`sid_tiger_coldstart`; Rajput et al., NeurIPS 2023, cold-start).

A new item (no training interaction) has a semantic ID from its text like every item, but TIGER's
decoder never wrote one as a target, so its beam almost never reaches one: the item's last code
(the disambiguation level) was never a training label after that prefix. TIGER's answer is a
retrieval step over the decoded IDs: an unseen item whose quantized codes (every level but the
disambiguation code) match a decoded item's is retrieved with it, and a parameter epsilon caps the
share of the top-K such items may take.

The row consumes `sid_tiger`'s exported weights (`policy`), trains nothing, and ranks the parent's
users: the parent's beam top-K, and after each decoded item the unseen items (no interaction in the
training split) that share its quantized codes and are not in the user's history, in catalogue
order, each as early as the cap allows: no top-p of the list (p = 1..K) holds more than
⌊epsilon·p⌋ inserted items, so epsilon bounds their share at every cutoff the evaluator reads
(the paper states it for its one K). The list is cut at K; an inserted item carries the score of
the item it follows (the list's order is its rank). The beam's own unseen items, if any, stay
where the beam put them and do not count against the cap.

The row exists to insert: it refuses a split without unseen items (use the new-item protocol,
`datasets.<name>.new_items`), and a ranking call that inserted nothing for any of its users fails,
naming the settings (with 3 levels of 32 codes a new item shares every quantized code with a decoded
one only inside a collision group, and a small epsilon's every-prefix cap admits none above rank
1/epsilon: lower `match_levels`, or raise epsilon). fit reports how many new test targets share a
key with a trained item (`new_test_targets_sharing_key`): the targets retrieval can reach at all.

Where the paper is silent we chose: an inserted item never precedes the decoded item whose codes
it shares, so the beam's order among decoded items is kept; unseen items wait for the cap in the
order their anchors were decoded; epsilon defaults to 0.1. `match_levels` shortens the shared
prefix (e.g. 2 of 3 levels): with small codebooks an unseen item rarely shares every quantized code
with a decoded one.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llm4rec.data.atomic import DataError
from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, parent_ranking
from llm4rec.llm.policy_export import PolicyStage, frozen_policy_facts, restore_policy
from llm4rec.models import RANKING_COLUMNS, BuildSpec, Histories
from llm4rec.paradigms.semantic_id.tiger import TigerRecommender

Ranking = list[tuple[str, float]]


@dataclass(frozen=True)
class ColdStartConfig:
    epsilon: float = 0.1  # the largest share of the top-K that inserted unseen items may take
    # the codes an unseen item must share with a decoded item: the first `match_levels` (None:
    # every quantized level, all but the disambiguation code, our reading of the paper)
    match_levels: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.epsilon <= 1.0:
            raise ValueError(f"cold start: epsilon must be in (0, 1], got {self.epsilon}")
        if self.match_levels is not None and self.match_levels < 1:
            raise ValueError(
                f"cold start: match_levels must be >= 1 or null, got {self.match_levels}"
            )


def insert_unseen(
    ranked: Ranking,
    key_of: Mapping[str, tuple],
    unseen_by_key: Mapping[tuple, Sequence[str]],
    history: set[str],
    k: int,
    epsilon: float,
) -> Ranking:
    """`ranked` (the beam's top-k, best first) with the unseen items that share a decoded item's
    key (its quantized codes) and are not in `history` inserted after it, each as early as the cap
    allows: at most ⌊epsilon·p⌋ inserted items in every top-p, p = 1..k; cut at k (module doc)."""
    decoded = {item for item, _ in ranked}  # an unseen item the beam wrote stays where it is
    out: Ranking = []
    pending: deque[str] = deque()  # retrieved, waiting for the cap, in anchor order
    seen: set[str] = set()
    inserted = 0
    for item, score in ranked:
        if len(out) >= k:
            break
        out.append((item, score))
        for new in unseen_by_key.get(key_of[item], ()):
            if new not in seen and new not in decoded and new not in history:
                pending.append(new)
                seen.add(new)
        while pending and len(out) < k and inserted + 1 <= math.floor(epsilon * (len(out) + 1)):
            out.append((pending.popleft(), out[-1][1]))  # the score of the item it follows
            inserted += 1
    return out


class ColdStartRecommender(PolicyStage):
    """sid_tiger's exported weights ranking with TIGER's cold-start retrieval (module doc)."""

    cfg: ColdStartConfig

    def __init__(self, spec: BuildSpec):
        super().__init__(spec)
        name = self.name
        if not isinstance(self.parent, TigerRecommender):
            raise DataError(
                f"{name}: the policy's model ({self.record['recommender']}) does not decode "
                "semantic IDs; TIGER's cold-start retrieval needs a sid_tiger parent"
            )
        self.inserted: list[int] = []

    def fit(self, split: Split, workdir: Path) -> dict:
        parent = self.parent
        info, tensors = restore_policy(parent, split, self.policy)
        parent.model.requires_grad_(False).eval()
        # an item's key: its first `match_levels` codes (default: all but the disambiguation code)
        quantized = info["code_length"] - 1
        match = self.cfg.match_levels or quantized
        if match > quantized:
            raise ValueError(
                f"{self.name}: match_levels {match} exceeds the {quantized} quantized levels of "
                f"the codes ({self.policy.source}; the last level disambiguates)"
            )
        self.key_of = {item: tuple(tokens[:match]) for item, tokens in parent.sequences.items()}
        popularity = split.item_popularity()  # training interactions, in catalogue order
        self.unseen_by_key: dict[tuple, list[str]] = defaultdict(list)
        for item in popularity.index[popularity.to_numpy() == 0].astype(str):
            self.unseen_by_key[self.key_of[item]].append(item)
        unseen = sum(len(v) for v in self.unseen_by_key.values())
        if not unseen:
            raise DataError(
                f"{self.name}: every catalogue item has training interactions, so there is nothing "
                "to retrieve; TIGER's cold-start retrieval needs the new-item protocol "
                "(datasets.<name>.new_items in the grid)"
            )
        trained_keys = {
            self.key_of[str(i)] for i in popularity.index[popularity.to_numpy() > 0].astype(str)
        }
        new_targets = [
            str(t[0]) for t in split.targets("test").values() if popularity.loc[t[0]] == 0
        ]
        reachable = sum(self.key_of[t] in trained_keys for t in new_targets)
        self.settings = (
            f"epsilon {self.cfg.epsilon}, match_levels {match} of {quantized}, {unseen} unseen "
            f"items on {len(self.unseen_by_key)} keys, {reachable} of {len(new_targets)} new test "
            "targets sharing a key with a trained item"
        )
        return (
            info
            | frozen_policy_facts(parent, self.policy, self.record, tensors)
            | {
                "epsilon": self.cfg.epsilon,
                "match_levels": match,
                "unseen_items": unseen,
                "unseen_keys": len(self.unseen_by_key),
                "new_test_targets": len(new_targets),
                "new_test_targets_sharing_key": reachable,
                "notes": [
                    f"{reachable} of {len(new_targets)} new test targets share a key (the first "
                    f"{match} codes) with a trained item; epsilon {self.cfg.epsilon}"
                ],
            }
        )

    def rank(self, histories: Histories, k: int) -> pd.DataFrame:
        beam = self.parent._rank_batches(histories, k)
        rows = []
        for user, group in beam.groupby("user_id", sort=True):
            ranked = list(zip(group["item_id"], group["score"], strict=True))
            out = insert_unseen(
                ranked,
                self.key_of,
                self.unseen_by_key,
                set(map(str, histories[user])),
                k,
                self.cfg.epsilon,
            )
            decoded = {item for item, _ in ranked}
            self.inserted.append(sum(item not in decoded for item, _ in out))
            rows += [(user, r + 1, item, score) for r, (item, score) in enumerate(out)]
        if histories and not any(self.inserted[-len(histories) :]):
            raise DataError(
                f"{self.name}: inserted no unseen item for any of the {len(histories)} users it "
                f"ranked at depth {k} ({self.settings}): the row would equal its parent. Lower "
                "match_levels (a shorter shared prefix), or raise epsilon (at most "
                "floor(epsilon * p) inserted items fit in a top-p)"
            )
        return pd.DataFrame(rows, columns=RANKING_COLUMNS)

    def inference_cost(self) -> dict[str, float]:
        """The parent's decoding counts, and the mean number of unseen items inserted per user of
        the phase just ranked."""
        inserted, self.inserted = self.inserted, []
        mean = sum(inserted) / len(inserted) if inserted else 0.0
        return self.parent.inference_cost() | {"coldstart_inserted_per_user": mean}


def build(spec: BuildSpec) -> ColdStartRecommender:
    return ColdStartRecommender(spec)


def estimate_cost(config: ColdStartConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: the parent's model ranking this row's users, nothing trained (the
    insertion of the new items' codes is not counted)."""
    estimate, _ = parent_ranking(cell)
    return dataclasses.replace(estimate, trainable=0)


def toy_params(params: dict, steps: int) -> dict:
    """`llm4rec smoke`: at toy cost few users are ranked, so an inserted unseen item may take half
    of a top-K (the row must insert something, or it fails: `fit`)."""
    return params | {"epsilon": 0.5}

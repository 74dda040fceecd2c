"""The evaluation protocol's splits, written once per dataset and read by every model.

Leave-one-out (default): per user, in time order, the last interaction is the test target,
the second-to-last the validation target, the rest training. Global temporal: one pair of
time cut points for all users (no training on the future of a test interaction). Ratio
(RecBole's general-model protocol): per user, a seeded random order of its interactions, the
first 80% training, the next 10% validation, the rest test (several targets per user; RecBole's
rounding of the counts).

Equal timestamps are ordered by the source file's row order or a seeded shuffle (`tie_break`),
not by item id: id order correlates with popularity and release date on MovieLens and Amazon
and moves every number (Ji et al., "A Critical Study on Data Leakage in Recommender System
Offline Evaluation", TOIS 2023). `tie_break: item_id` exists to reproduce a paper that did it
(LlamaRec sorts by timestamp, then item id). On ML-100K a test target often shares its
timestamp with the user's last history items (one rating session): `test_ties` can make the
whole tie group the test target (`group`) or drop those users (`drop`), and split.json counts
them (`test_tied_with_history`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.atomic import DataError
from llm4rec.io import read_json, sha256_file, write_json, write_parquet
from llm4rec.layout import SPLIT_INTERACTIONS, SPLIT_ITEMS, SPLIT_JSON

PHASES = ("train", "valid", "test")


TIE_BREAKS = ("file_order", "seeded", "item_id")
TEST_TIES = ("keep", "group", "drop")


def chronological(interactions: pd.DataFrame, tie_break: str, seed: int) -> pd.DataFrame:
    """Sort by (timestamp, tie-breaker) and add `seq`, the global chronological rank."""
    df = interactions.copy()
    if tie_break == "file_order":
        df["_tie"] = df["order"].to_numpy()
    elif tie_break == "seeded":
        df["_tie"] = np.random.default_rng(seed).permutation(len(df))
    elif tie_break == "item_id":  # numeric ids numerically (LlamaRec's sort), else as strings
        df["_tie"] = _natural_key(df["item_id"]).to_numpy()
    else:
        raise DataError(f"split.tie_break '{tie_break}' is not one of: {', '.join(TIE_BREAKS)}")
    df = df.sort_values(["timestamp", "_tie"], kind="stable").drop(columns="_tie")
    df["seq"] = np.arange(len(df), dtype=np.int64)
    return df


def leave_one_out_split(
    interactions: pd.DataFrame,
    tie_break: str = "file_order",
    seed: int = 0,
    test_ties: str = "keep",
) -> pd.DataFrame:
    """Label each interaction train/valid/test; users with < 3 interactions are dropped.
    `test_ties`: keep (the last interaction is the test target whatever shares its timestamp),
    group (every interaction at the user's last timestamp is a test target, the one before them
    the validation target), drop (a user whose last two interactions share a timestamp leaves)."""
    if test_ties not in TEST_TIES:
        raise DataError(f"split.test_ties '{test_ties}' is not one of: {', '.join(TEST_TIES)}")
    df = chronological(interactions, tie_break, seed)
    df = df.sort_values(["user_id", "seq"], kind="stable")
    counts = df.groupby("user_id")["item_id"].transform("size")
    df = df[counts >= 3].copy()
    from_end = df.groupby("user_id").cumcount(ascending=False)
    if test_ties == "group":
        last = df.groupby("user_id")["timestamp"].transform("max")
        in_group = df["timestamp"] == last
        # the validation target: the latest interaction before the group
        before = df[~in_group].groupby("user_id").cumcount(ascending=False)
        valid = pd.Series(False, index=df.index)
        valid[before.index[before.to_numpy() == 0]] = True
        df["phase"] = np.select([in_group, valid], ["test", "valid"], "train")
        trained = df[df["phase"] == "train"].groupby("user_id").size()
        return df[df["user_id"].isin(trained.index)]
    df["phase"] = np.select([from_end == 0, from_end == 1], ["test", "valid"], "train")
    if test_ties == "drop":
        tied = tied_test_users(df)
        df = df[~df["user_id"].isin(tied)]
    return df


def tied_test_users(labelled: pd.DataFrame) -> set[str]:
    """The users whose (first) test target shares its timestamp with their latest history
    interaction: a target from the same rating session as the history's end."""
    test = labelled[labelled["phase"] == "test"].groupby("user_id")["timestamp"].min()
    history = labelled[labelled["phase"] != "test"].groupby("user_id")["timestamp"].max()
    both = test.index.intersection(history.index)
    return set(both[(test.loc[both] == history.loc[both]).to_numpy()])


def ratio_split(interactions: pd.DataFrame, ratios: Sequence[float], seed: int = 0) -> pd.DataFrame:
    """RecBole's general-model split (eval_args split RS, order RO, group_by user): per user a
    seeded random order of its interactions, the first share training, then validation, then
    test, the counts rounded as RecBole's `_calcu_split_ids` rounds them; users with < 3
    interactions are dropped."""
    if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-9 or min(ratios) <= 0:
        raise DataError(f"split.ratios {list(ratios)} must be three shares summing to 1")
    df = chronological(interactions, "file_order", seed)
    counts = df.groupby("user_id")["item_id"].transform("size")
    df = df[counts >= 3].copy()
    df["_random"] = np.random.default_rng(seed).permutation(len(df))
    df = df.sort_values(["user_id", "_random"], kind="stable")
    position = df.groupby("user_id").cumcount().to_numpy()
    total = df.groupby("user_id")["item_id"].transform("size").to_numpy()
    phase = np.empty(len(df), dtype=object)
    for n in np.unique(total):
        cut = np.cumsum(ratio_counts(int(n), ratios))
        mine = total == n
        phase[mine] = np.select(
            [position[mine] < cut[0], position[mine] < cut[1]], ["train", "valid"], "test"
        )
    df["phase"] = phase
    return df.drop(columns="_random").sort_values(["user_id", "seq"], kind="stable")


def ratio_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """(train, valid, test) counts of one user's `total` interactions, as RecBole rounds them:
    int(share x total) for validation and test, the rest training, and a share that would round
    to 0 but is positive given one interaction while training keeps more than one."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def global_temporal_split(
    interactions: pd.DataFrame,
    valid_frac: float,
    test_frac: float,
    tie_break: str = "file_order",
    seed: int = 0,
) -> pd.DataFrame:
    """Cut the global timeline at the (1 - valid - test) and (1 - test) quantiles.

    Valid/test interactions of users or items never seen in training are dropped: ID-based
    models cannot rank them, and every model must face the same targets.
    """
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise DataError(
            f"split: valid_frac={valid_frac}, test_frac={test_frac} must be in (0,1) with sum < 1"
        )
    df = chronological(interactions, tie_break, seed)
    n = len(df)
    valid_start, test_start = int(n * (1 - valid_frac - test_frac)), int(n * (1 - test_frac))
    phase = np.full(n, "train", dtype=object)
    phase[valid_start:test_start] = "valid"
    phase[test_start:] = "test"
    df["phase"] = phase
    train = df[df["phase"] == "train"]
    known = df["user_id"].isin(set(train["user_id"])) & df["item_id"].isin(set(train["item_id"]))
    df = df[(df["phase"] == "train") | known]
    return df.sort_values(["user_id", "seq"], kind="stable")


@dataclass
class Split:
    """A dataset's split: interactions labelled by phase, and the item catalogue with text."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp, seq, phase; per user in time order
    items: pd.DataFrame  # item_id, title, year, genres, description; the candidate catalogue
    meta: dict
    # derived groupings, computed once (a written split is read-only; each validation reuses them)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _cached(self, key: tuple, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def phase(self, name: str) -> pd.DataFrame:
        return self.interactions[self.interactions["phase"] == name]

    def targets(self, phase: str) -> dict[str, list[str]]:
        """{user: items to predict} for 'valid' or 'test'."""
        return self._cached(("targets", phase), lambda: _grouped_items(self.phase(phase)))

    def history(self, phase: str) -> dict[str, list[str]]:
        """{user: chronological items known before `phase`}: the model's input and the
        items removed from its candidate set (train for valid; train + valid for test)."""
        before = PHASES[: PHASES.index(phase)]
        return self._cached(
            ("history", phase),
            lambda: _grouped_items(self.interactions[self.interactions["phase"].isin(before)]),
        )

    def item_popularity(self) -> pd.Series:
        """Training interaction count per catalogue item (0 for items unseen in training)."""
        return self._cached(
            ("popularity",),
            lambda: (
                self.phase("train")["item_id"]
                .value_counts()
                .reindex(self.items["item_id"], fill_value=0)
            ),
        )


def _grouped_items(df: pd.DataFrame) -> dict[str, list[str]]:
    return {user: group.tolist() for user, group in df.groupby("user_id", sort=True)["item_id"]}


NEW_ITEM_DRAWS = ("random", "newest")


def hold_out_new_items(
    labelled: pd.DataFrame,
    share: float,
    seed: int,
    by: str = "random",
    items: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The new-item protocol: a `share` of the split's items leaves training entirely.

    Which items: `by` "random", a seeded uniform draw; "newest", the items of the latest release
    years (`items`' `year` field) first, the ties at the share's boundary drawn seeded (an item
    without a year is never chosen): the items a platform would meet new. Every train and valid
    interaction of the chosen items is dropped (no model trains on them, none selects a checkpoint
    on them, none sees them in a history); their test interactions stay, so test targets include
    items nothing was trained on, while their text stays in the catalogue. A user left without a
    training interaction leaves the split (no history to rank from). Returns the split and its
    record: the chosen items and how many test targets are new."""
    if not 0 < share < 1:
        raise DataError(f"new_items: {share} is not a share of the items (0 < share < 1)")
    if by not in NEW_ITEM_DRAWS:
        raise DataError(f"new_items_by: '{by}' is not one of: {', '.join(NEW_ITEM_DRAWS)}")
    pool = np.array(sorted(labelled["item_id"].unique(), key=str), dtype=object)
    count = round(share * len(pool))
    rng = np.random.default_rng(seed)
    if by == "random":
        chosen = set(rng.choice(pool, size=count, replace=False))
    else:
        if items is None or "year" not in items:
            raise DataError("new_items_by: newest needs the items' `year` field (items.parquet)")
        years = pd.to_numeric(
            items.set_index(items["item_id"].astype(str))["year"].astype(str).str[:4],
            errors="coerce",
        )
        year = np.array([years.get(str(i), np.nan) for i in pool], dtype=float)
        # newest first; a seeded random key orders the items of one year
        order = np.lexsort((rng.random(len(pool)), -np.nan_to_num(year, nan=-np.inf)))
        order = [i for i in order if not np.isnan(year[i])]
        chosen = set(pool[order[:count]])
    new = labelled["item_id"].isin(chosen)
    kept = labelled[~(new & labelled["phase"].isin(["train", "valid"]))]
    trained_users = set(kept.loc[kept["phase"] == "train", "user_id"])
    kept = kept[kept["user_id"].isin(trained_users)]
    test = kept[kept["phase"] == "test"]
    return kept, {
        "new_items": sorted(chosen, key=str),
        "new_items_share": share,
        "new_items_by": by,
        "test_targets_new": int(test["item_id"].isin(chosen).sum()),
        "users_dropped": int(labelled["user_id"].nunique() - kept["user_id"].nunique()),
    }


SPLIT_METHODS = ("leave_one_out", "global_temporal", "ratio")


def make_split(interactions: pd.DataFrame, items: pd.DataFrame, split_cfg: dict) -> pd.DataFrame:
    method = split_cfg.get("method", "leave_one_out")
    tie_break, seed = split_cfg.get("tie_break", "file_order"), int(split_cfg.get("seed", 0))
    if method == "leave_one_out":
        return leave_one_out_split(
            interactions, tie_break, seed, split_cfg.get("test_ties", "keep")
        )
    if method == "ratio":
        return ratio_split(interactions, split_cfg.get("ratios", [0.8, 0.1, 0.1]), seed)
    if method == "global_temporal":
        return global_temporal_split(
            interactions,
            split_cfg.get("valid_frac", 0.1),
            split_cfg.get("test_frac", 0.1),
            tie_break,
            seed,
        )
    raise DataError(f"split.method '{method}' is not one of: {', '.join(SPLIT_METHODS)}")


def write_split(
    out_dir: str | Path, split_df: pd.DataFrame, items: pd.DataFrame, meta: dict
) -> Split:
    """Write the split files and a `split.json` with their checksums (split.json last)."""
    out_dir = Path(out_dir)
    if split_df.empty or not {"valid", "test"} <= set(split_df["phase"]):
        raise DataError(
            f"dataset '{meta.get('dataset')}': split has no validation or no test interactions "
            "(leave-one-out holds out the last two interactions of each user with at least 3; "
            "users with fewer are dropped)"
        )
    inter = split_df[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True)
    catalogue, without_text = interacted_catalogue(inter, items, meta.get("dataset"))
    write_parquet(out_dir / SPLIT_INTERACTIONS, inter)
    write_parquet(out_dir / SPLIT_ITEMS, catalogue)
    stats = {f"{p}_interactions": int((inter["phase"] == p).sum()) for p in PHASES}
    stats |= {
        "users": int(inter["user_id"].nunique()),
        "items": len(catalogue),
        "test_users": int(inter.loc[inter["phase"] == "test", "user_id"].nunique()),
        "valid_users": int(inter.loc[inter["phase"] == "valid", "user_id"].nunique()),
        "items_without_text": without_text,
    }
    method = (meta.get("config") or {}).get("split", {}).get("method", "leave_one_out")
    if method == "leave_one_out":  # test targets from the rating session the history ends with
        stats["test_tied_with_history"] = len(tied_test_users(inter))
    meta = meta | {
        "stats": stats,
        "checksums": {f: sha256_file(out_dir / f) for f in (SPLIT_INTERACTIONS, SPLIT_ITEMS)},
    }
    write_json(out_dir / SPLIT_JSON, meta)
    return Split(inter, catalogue, meta)


def interacted_catalogue(
    inter: pd.DataFrame, items: pd.DataFrame, dataset: str | None = None
) -> tuple[pd.DataFrame, int]:
    """The candidate catalogue: every item of the split's interactions, with its text.

    An interaction whose item is missing from the item file (`.item`) would otherwise be a
    target no model can rank (the catalogue comes from that file). Such items join the
    catalogue with empty text, so every model can rank them; paradigms that need text refuse an
    item without a title by name (llm4rec.llm.identifiers). Returns (catalogue, items added).
    """
    interacted = set(inter["item_id"])
    missing = sorted(interacted - set(items["item_id"]), key=str)
    if missing:
        print(
            f"[llm4rec] dataset '{dataset}': {len(missing)} interacted items are not in the item "
            f"file (e.g. {missing[:3]}); they join the catalogue with empty text",
            flush=True,
        )
        blank = pd.DataFrame(
            {"item_id": missing, **{c: "" for c in items.columns if c != "item_id"}}
        )
        items = pd.concat([items, blank], ignore_index=True)
    catalogue = (
        items[items["item_id"].isin(interacted)]
        .sort_values("item_id", key=_natural_key)
        .reset_index(drop=True)
    )
    return catalogue, len(missing)


def _natural_key(ids: pd.Series) -> pd.Series:
    """Sort numeric ids numerically and the rest as strings (catalogue order is cosmetic)."""
    numeric = pd.to_numeric(ids, errors="coerce")
    return numeric.fillna(np.inf) if numeric.notna().all() else ids


def read_split(split_dir: str | Path) -> Split:
    """Read a written split, refusing files whose checksum differs from split.json."""
    split_dir = Path(split_dir)
    meta_path = split_dir / SPLIT_JSON
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found; run `llm4rec prepare` for this dataset first")
    meta = read_json(meta_path)
    for name, expected in meta["checksums"].items():
        if sha256_file(split_dir / name) != expected:
            raise DataError(
                f"{split_dir / name}: checksum differs from split.json; the split was modified "
                "after it was written"
            )
    return Split(
        pd.read_parquet(split_dir / SPLIT_INTERACTIONS),
        pd.read_parquet(split_dir / SPLIT_ITEMS),
        meta,
    )

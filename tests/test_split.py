"""Split invariants: leave-one-out, global temporal and ratio, tie rules, checksums."""

import math

import pandas as pd
import pytest

from llm4rec.data.atomic import DataError
from llm4rec.data.preprocess import preprocess
from llm4rec.data.sources import load_ml100k
from llm4rec.data.split import (
    Split,
    global_temporal_split,
    leave_one_out_split,
    ratio_counts,
    ratio_split,
    read_split,
    tied_test_users,
    write_split,
)
from llm4rec.evaluation.evaluate import evaluate_rankings

from .conftest import interactions_frame


@pytest.fixture(scope="module")
def ml100k():
    raw = load_ml100k()
    kept, _ = preprocess(
        raw.interactions,
        rating_threshold=None,
        dedup="first",
        min_user=5,
        min_item=5,
        dataset="ml-100k",
    )
    return raw, kept


def test_leave_one_out_invariants_on_ml100k(ml100k):
    _, kept = ml100k
    split = leave_one_out_split(kept)
    per_user = split.groupby("user_id")["phase"].value_counts().unstack(fill_value=0)
    assert (per_user["valid"] == 1).all() and (per_user["test"] == 1).all()
    assert len(per_user) == kept["user_id"].nunique() == 943
    # no test (or validation) item appears in the same user's training data
    train_pairs = set(
        map(tuple, split.loc[split["phase"] == "train", ["user_id", "item_id"]].to_numpy())
    )
    for phase in ("valid", "test"):
        pairs = set(
            map(tuple, split.loc[split["phase"] == phase, ["user_id", "item_id"]].to_numpy())
        )
        assert not pairs & train_pairs
    # the test item is the user's latest interaction; validation the one before
    last = split.groupby("user_id")["timestamp"].transform("max")
    assert (
        split.loc[split["phase"] == "test", "timestamp"] == last[split["phase"] == "test"]
    ).all()
    max_train = split[split["phase"] == "train"].groupby("user_id")["timestamp"].max()
    valid_time = split[split["phase"] == "valid"].set_index("user_id")["timestamp"]
    assert (max_train <= valid_time.loc[max_train.index]).all()


def test_ties_broken_by_file_order_not_item_id():
    # u1's last two interactions share a timestamp; file order says z then a
    rows = [("u1", "m", 1), ("u1", "n", 2), ("u1", "z", 5), ("u1", "a", 5)]
    split = leave_one_out_split(interactions_frame(rows))
    assert split.set_index("item_id")["phase"].to_dict() == {
        "m": "train",
        "n": "train",
        "z": "valid",
        "a": "test",
    }
    swapped = leave_one_out_split(interactions_frame([rows[0], rows[1], rows[3], rows[2]]))
    assert swapped.set_index("item_id").loc["z", "phase"] == "test"


def test_seeded_tie_break_is_reproducible():
    rows = [("u1", str(i), 1) for i in range(10)]
    first = leave_one_out_split(interactions_frame(rows), tie_break="seeded", seed=3)
    again = leave_one_out_split(interactions_frame(rows), tie_break="seeded", seed=3)
    assert first["item_id"].tolist() == again["item_id"].tolist()


def test_users_with_fewer_than_three_interactions_are_dropped():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u2", "c", 3)]
    assert set(leave_one_out_split(interactions_frame(rows))["user_id"]) == {"u2"}


def test_global_temporal_split_never_trains_on_the_future(ml100k):
    _, kept = ml100k
    split = global_temporal_split(kept, valid_frac=0.1, test_frac=0.1)
    t = {p: split.loc[split["phase"] == p, "timestamp"] for p in ("train", "valid", "test")}
    assert t["train"].max() <= t["valid"].min() and t["valid"].max() <= t["test"].min()
    train = split[split["phase"] == "train"]
    evaluated = split[split["phase"] != "train"]
    assert evaluated["user_id"].isin(set(train["user_id"])).all()
    assert evaluated["item_id"].isin(set(train["item_id"])).all()


def test_split_files_are_checksummed(tmp_path, ml100k):
    raw, kept = ml100k
    written = write_split(tmp_path, leave_one_out_split(kept), raw.items, {"dataset": "ml-100k"})
    assert written.meta["stats"]["test_users"] == 943
    again = read_split(tmp_path)
    assert again.targets("test") == written.targets("test")
    assert len(again.items) == kept["item_id"].nunique()
    df = pd.read_parquet(tmp_path / "interactions.parquet")
    df.loc[0, "phase"] = "test"
    df.to_parquet(tmp_path / "interactions.parquet", index=False)
    with pytest.raises(DataError, match="interactions.parquet: checksum differs"):
        read_split(tmp_path)


def test_new_items_leave_training_entirely_and_keep_their_text(tmp_path, ml100k):
    """The new-item protocol on ml-100k: every train and valid interaction of the chosen items is
    gone, their test interactions stay (targets with zero training popularity) and their titles
    stay in the catalogue; nothing else changes; the same seed chooses the same items."""
    from llm4rec.data.split import hold_out_new_items

    raw, kept = ml100k
    labelled = leave_one_out_split(kept)
    held, record = hold_out_new_items(labelled, 0.1, seed=0)
    new = set(record["new_items"])
    assert len(new) == round(0.1 * labelled["item_id"].nunique()) == 135
    assert hold_out_new_items(labelled, 0.1, seed=0)[1]["new_items"] == record["new_items"]
    assert hold_out_new_items(labelled, 0.1, seed=1)[1]["new_items"] != record["new_items"]
    seen = held[held["phase"].isin(["train", "valid"])]
    assert not seen["item_id"].isin(new).any()
    # every other interaction is untouched (users who kept a training interaction)
    users = set(held["user_id"])
    expected = labelled[
        labelled["user_id"].isin(users)
        & ~(labelled["item_id"].isin(new) & labelled["phase"].isin(["train", "valid"]))
    ]
    pd.testing.assert_frame_equal(held, expected)
    test = held[held["phase"] == "test"]
    by_hand = int(
        labelled[(labelled["phase"] == "test") & labelled["user_id"].isin(users)]["item_id"]
        .isin(new)
        .sum()
    )
    assert record["test_targets_new"] == by_hand == int(test["item_id"].isin(new).sum()) > 0
    written = write_split(tmp_path, held, raw.items, {"dataset": "ml-100k"})
    popularity = written.item_popularity()
    targets_new = sorted(set(test["item_id"]) & new)
    assert (popularity.loc[targets_new] == 0).all()
    titles = written.items.set_index("item_id").loc[targets_new, "title"]
    assert titles.str.len().gt(0).all()
    assert titles.to_dict() == raw.items.set_index("item_id").loc[targets_new, "title"].to_dict()
    with pytest.raises(DataError, match="new_items: 1.5 is not a share of the items"):
        hold_out_new_items(labelled, 1.5, seed=0)


def test_new_items_by_release_year_take_the_newest_first(ml100k):
    """`new_items_by: newest`: the chosen items are the latest release years' (every item of a
    newer year before any of an older one; the boundary year's items drawn seeded), never an item
    without a year."""
    from llm4rec.data.split import hold_out_new_items

    raw, kept = ml100k
    labelled = leave_one_out_split(kept)
    _, record = hold_out_new_items(labelled, 0.1, 0, "newest", raw.items)
    year = pd.to_numeric(raw.items.set_index("item_id")["year"].str[:4], errors="coerce")
    pool = year.loc[sorted(labelled["item_id"].unique())]
    chosen = pool.loc[record["new_items"]]
    assert len(chosen) == round(0.1 * len(pool)) and chosen.notna().all()
    assert chosen.min() >= pool.drop(chosen.index).max()  # nothing newer was left out
    assert record["new_items_by"] == "newest"
    again = hold_out_new_items(labelled, 0.1, 0, "newest", raw.items)[1]["new_items"]
    assert again == record["new_items"]
    with pytest.raises(DataError, match="new_items_by: 'oldest' is not one of: random, newest"):
        hold_out_new_items(labelled, 0.1, 0, "oldest", raw.items)


def test_item_id_tie_break_sorts_numeric_ids_numerically():
    # LlamaRec's sort: (timestamp, item id); '10' after '9' (numbers), whatever the file order
    rows = [("u1", "7", 1), ("u1", "8", 2), ("u1", "10", 5), ("u1", "9", 5)]
    split = leave_one_out_split(interactions_frame(rows), tie_break="item_id")
    assert split.set_index("item_id")["phase"].to_dict() == {
        "7": "train",
        "8": "train",
        "9": "valid",
        "10": "test",
    }
    # ids that are not all numbers sort as strings
    rows = [("u1", "m", 1), ("u1", "n", 2), ("u1", "b", 5), ("u1", "a", 5)]
    split = leave_one_out_split(interactions_frame(rows), tie_break="item_id")
    assert split.set_index("item_id").loc["b", "phase"] == "test"


TIED = [
    # u1: a rating session at t=5 ends the history (b c d); u2: no tie at its end
    ("u1", "a", 1),
    ("u1", "b", 5),
    ("u1", "c", 5),
    ("u1", "d", 5),
    ("u2", "a", 1),
    ("u2", "b", 2),
    ("u2", "c", 3),
    ("u2", "d", 4),
]


def test_test_ties_keep_group_and_drop():
    kept = leave_one_out_split(interactions_frame(TIED))
    assert tied_test_users(kept) == {"u1"}  # d (test) shares t=5 with c (valid)
    grouped = leave_one_out_split(interactions_frame(TIED), test_ties="group")
    phases = grouped.groupby("user_id").apply(
        lambda g: dict(zip(g["item_id"], g["phase"], strict=True)), include_groups=False
    )
    # u1: the whole session is the target, the item before it validation; no training left -> out
    assert "u1" not in phases
    assert phases["u2"] == {"a": "train", "b": "train", "c": "valid", "d": "test"}
    longer = [*TIED, ("u1", "z", 0)]  # u1 now has a training item (z), a the validation target
    grouped = leave_one_out_split(interactions_frame(longer), test_ties="group")
    u1 = grouped[grouped["user_id"] == "u1"].set_index("item_id")["phase"].to_dict()
    assert u1 == {"z": "train", "a": "valid", "b": "test", "c": "test", "d": "test"}
    dropped = leave_one_out_split(interactions_frame(TIED), test_ties="drop")
    assert set(dropped["user_id"]) == {"u2"}
    with pytest.raises(DataError, match="split.test_ties 'all' is not one of: keep, group, drop"):
        leave_one_out_split(interactions_frame(TIED), test_ties="all")


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        # RecBole's _calcu_split_ids by hand: int(0.1 x n) for valid and test, the rest train;
        # a share in (0, 1) interactions gets one while train keeps more than one
        (10, [8, 1, 1]),
        (25, [21, 2, 2]),  # int(2.5) = 2
        (5, [3, 1, 1]),  # 0.5 -> 0, then test +1, valid +1
        (3, [1, 1, 1]),
        (2, [1, 0, 1]),  # train reaches 1 after the test share: valid stays 0
    ],
)
def test_ratio_counts_round_as_recbole(total, expected):
    assert ratio_counts(total, [0.8, 0.1, 0.1]) == expected


def test_ratio_split_is_seeded_per_user_and_on_ml100k_holds_recbole_counts(ml100k):
    _, kept = ml100k
    split = ratio_split(kept, [0.8, 0.1, 0.1], seed=0)
    per_user = split.groupby("user_id")["phase"].value_counts().unstack(fill_value=0)
    totals = per_user.sum(axis=1)
    for user in per_user.index[:50]:
        assert per_user.loc[user, ["train", "valid", "test"]].tolist() == ratio_counts(
            int(totals[user]), [0.8, 0.1, 0.1]
        )
    assert len(split) == len(kept)
    again = ratio_split(kept, [0.8, 0.1, 0.1], seed=0)
    assert again["phase"].tolist() == split["phase"].tolist()
    other = ratio_split(kept, [0.8, 0.1, 0.1], seed=1)
    assert other["phase"].tolist() != split["phase"].tolist()
    with pytest.raises(DataError, match=r"split.ratios \[0.8, 0.1\] must be three shares"):
        ratio_split(kept, [0.8, 0.1])


def test_ratio_split_metrics_with_several_targets_by_hand():
    # u1 has 10 interactions: 8 train, 1 valid, 1 test; u2 has 20: 16 train, 2 valid, 2 test
    rows = [("u1", f"i{j}", j) for j in range(10)] + [("u2", f"i{j}", j) for j in range(20)]
    labelled = ratio_split(interactions_frame(rows), [0.8, 0.1, 0.1], seed=7)
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(30)]})  # 10 nobody has seen
    for field in ("title", "year", "genres", "description"):
        items[field] = ""
    inter = labelled[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True)
    split = Split(inter, items, {"checksums": {}})
    test = split.targets("test")
    assert len(test["u1"]) == 1 and len(test["u2"]) == 2
    history = split.history("test")
    assert len(history["u2"]) == 18  # train and valid items leave the candidates
    candidates = {u: [i for i in items["item_id"] if i not in set(history[u])] for u in test}
    # u1: its target at rank 2; u2: one target at rank 1, the other at rank 3
    first, second = test["u2"]
    u1_list = [c for c in candidates["u1"] if c != test["u1"][0]]
    u2_rest = [c for c in candidates["u2"] if c not in (first, second)]
    ranked = {
        "u1": [u1_list[0], test["u1"][0], *u1_list[1:]],
        "u2": [first, *u2_rest[:1], second, *u2_rest[1:]],
    }
    frame = pd.DataFrame(
        [(u, r + 1, i, 0.0) for u, lst in ranked.items() for r, i in enumerate(lst)],
        columns=["user_id", "rank", "item_id", "score"],
    )
    per_user, _ = evaluate_rankings(frame, split, "test", [1, 3])
    per_user = per_user.set_index("user_id")
    dcg = {r: 1 / math.log2(r + 1) for r in (1, 2, 3)}
    assert per_user.loc["u1", "hr_at_1"] == 0 and per_user.loc["u1", "hr_at_3"] == 1
    assert per_user.loc["u1", "ndcg_at_3"] == pytest.approx(dcg[2])
    assert per_user.loc["u2", "recall_at_1"] == pytest.approx(1 / 2)
    assert per_user.loc["u2", "recall_at_3"] == pytest.approx(1.0)
    # two targets: the ideal puts them at ranks 1 and 2
    assert per_user.loc["u2", "ndcg_at_3"] == pytest.approx((dcg[1] + dcg[3]) / (dcg[1] + dcg[2]))
    assert per_user.loc["u2", "ndcg_at_1"] == pytest.approx(1.0)
    assert per_user.loc["u2", "mrr_at_3"] == pytest.approx(1.0)


def test_split_json_counts_test_targets_tied_with_the_history(tmp_path, ml100k):
    raw, kept = ml100k
    written = write_split(tmp_path, leave_one_out_split(kept), raw.items, {"dataset": "ml-100k"})
    tied = written.meta["stats"]["test_tied_with_history"]
    labelled = leave_one_out_split(kept)
    last = labelled.sort_values("seq").groupby("user_id").tail(2)
    by_hand = sum(g["timestamp"].nunique() == 1 for _, g in last.groupby("user_id"))
    assert tied == by_hand and 0 < tied < 943

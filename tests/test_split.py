"""Split invariants: leave-one-out and global temporal, tie-breaking, checksums."""

import pandas as pd
import pytest

from llm4rec.data.atomic import DataError
from llm4rec.data.preprocess import preprocess
from llm4rec.data.sources import load_ml100k
from llm4rec.data.split import global_temporal_split, leave_one_out_split, read_split, write_split

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

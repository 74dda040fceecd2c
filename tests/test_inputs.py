"""Declared inputs between runs and from artifacts: resolution, checks naming both sides, and the
worked example (emb_knn) consuming an artifact (item_text_lsa) and another run's export."""

import json

import numpy as np
import pytest
import yaml

from llm4rec.config import load_grid
from llm4rec.data.atomic import DataError
from llm4rec.data.item_text import lsa_embeddings
from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.io import write_json, write_npy
from llm4rec.models import build_model
from llm4rec.runner import build_artifact, prepare_dataset, resolve_inputs

LSA = {"artifact": "item_text_lsa", "params": {"dim": 16}}


def grid_with(tmp_path, models, name="grid.yaml"):
    cfg = {
        "name": "inputs",
        "seeds": [0],
        "results_dir": str(tmp_path / "results"),
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": models,
    }
    (tmp_path / name).write_text(yaml.safe_dump(cfg))
    return load_grid(tmp_path / name)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    grid = grid_with(tmp, [{"name": "emb_knn", "inputs": {"embeddings": LSA}}])
    split = prepare_dataset(grid, "ml-100k")
    (_, _, key), source = next(iter(grid.artifacts().items()))
    build_artifact(grid, "ml-100k", "item_text_lsa", key)
    return tmp, grid, split, source


def test_artifact_is_built_with_its_record(prepared):
    _, grid, split, source = prepared
    record = json.loads(source.marker.read_text())
    assert (
        record["split_checksums"] == split.meta["checksums"]
        and record["config_hash"] == source.config_hash
    )
    vectors = np.load(source.folder / "item_embeddings.npy")
    assert vectors.shape == (len(split.items), 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    with pytest.raises(
        DataError, match=r"no run of this grid consumes artifact ml-100k/item_text_lsa/abc"
    ):
        build_artifact(grid, "ml-100k", "item_text_lsa", "abc")


def test_consumer_ranks_by_cosine_over_the_resolved_embeddings(prepared):
    tmp, grid, split, source = prepared
    inputs = resolve_inputs(grid, grid.run_spec("ml-100k", "emb_knn", 0), split)
    assert inputs["embeddings"].paths == {
        "item_embeddings.npy": source.folder / "item_embeddings.npy"
    }
    rec = build_model("emb_knn", {}, 0, "cpu", inputs=inputs)
    info = rec.fit(split, tmp / "work")
    assert info["input"].startswith("artifact item_text_lsa/")
    history = split.history("test")
    users = sorted(split.targets("test"))[:25]
    rankings = rec.rank({u: history[u] for u in users}, 10)
    # valid: unseen catalogue items only
    evaluate_rankings(rankings, split, "test", [10], users=users)
    # independently: cosine between each item and the mean of the user's history vectors
    vectors = np.load(source.folder / "item_embeddings.npy").astype(np.float64)
    items = split.items["item_id"].tolist()
    user = users[0]
    rows = [items.index(i) for i in history[user]]
    scores = vectors @ vectors[rows].mean(axis=0)
    scores[rows] = -np.inf
    expected = [items[i] for i in np.argsort(-scores, kind="stable")[:10]]
    assert rankings[rankings["user_id"] == user]["item_id"].tolist()[:5] == expected[:5]


def test_lsa_gives_equal_texts_equal_vectors_and_caps_its_dimension():
    docs = [["red", "car"], ["red", "car"], ["blue", "sky"], ["blue", "car"], []]
    vectors = lsa_embeddings(docs, dim=50, min_count=1)
    assert vectors.shape == (5, 4)  # at most min(items, words): 4 words
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[2]) and np.allclose(vectors[4], 0)


def test_missing_or_mismatched_upstream_run_is_named_with_both_sides(prepared, tmp_path):
    tmp, _, split, _ = prepared
    grid = grid_with(tmp, [{"name": "bpr"}, {"name": "emb_knn"}], name="run_input.yaml")
    upstream = grid.run_dir("ml-100k", "bpr", 0)
    consumer = grid.run_dir("ml-100k", "emb_knn", 0)
    with pytest.raises(
        DataError,
        match=rf"{consumer} consumes 'embeddings' from run 'bpr' seed 0: {upstream}/run.json not "
        r"found",
    ):
        resolve_inputs(grid, grid.run_spec("ml-100k", "emb_knn", 0), split)
    record = {
        "split_checksums": {"interactions.parquet": "other"},
        "config_hash": grid.run_hash("ml-100k", "bpr", 0),
    }
    write_json(upstream / "run.json", record)
    with pytest.raises(DataError, match=r"was built on another split than .*data/ml-100k"):
        resolve_inputs(grid, grid.run_spec("ml-100k", "emb_knn", 0), split)
    write_json(
        upstream / "run.json",
        record | {"split_checksums": split.meta["checksums"], "config_hash": "0ld"},
    )
    with pytest.raises(
        DataError,
        match=rf"has config hash 0ld, the grid now gives {grid.run_hash('ml-100k', 'bpr', 0)}",
    ):
        resolve_inputs(grid, grid.run_spec("ml-100k", "emb_knn", 0), split)
    write_json(upstream / "run.json", record | {"split_checksums": split.meta["checksums"]})
    (upstream / "exports").mkdir()
    with pytest.raises(
        DataError, match=r"exports/item_embeddings.npy not found \(the run wrote: nothing\)"
    ):
        resolve_inputs(grid, grid.run_spec("ml-100k", "emb_knn", 0), split)
    write_npy(upstream / "exports" / "item_embeddings.npy", np.ones((7, 4)))
    write_json(
        upstream / "run.json",
        record
        | {"split_checksums": split.meta["checksums"], "files": {"item_embeddings.npy": "0" * 64}},
    )
    with pytest.raises(
        DataError, match=r"item_embeddings.npy differs from the file .*run.json records \(sha256\)"
    ):
        resolve_inputs(grid, grid.run_spec("ml-100k", "emb_knn", 0), split)
    write_json(upstream / "run.json", record | {"split_checksums": split.meta["checksums"]})
    inputs = resolve_inputs(grid, grid.run_spec("ml-100k", "emb_knn", 0), split)
    with pytest.raises(
        ValueError,
        match=rf"item_embeddings.npy \(from run bpr/seed0 .*\): 7 rows, but this run's catalogue "
        rf"\(items.parquet\) has {len(split.items)} items",
    ):
        build_model("emb_knn", {}, 0, "cpu", inputs=inputs).fit(split, tmp_path)

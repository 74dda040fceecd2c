"""Steerability (llm4rec.evaluation.steer): constraint sets of requests by hand on a six-item
fixture and against `matches` (the per-item reference), the share of a list inside them, the
post-filtered ranking's metrics, and a post-filtered list's steerability of 1."""

import math

import numpy as np
import pandas as pd
import pytest

from llm4rec.data.requests import RequestTemplate, matches
from llm4rec.evaluation.steer import constraint_matrix, steer_frame

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e", "f"],
        "title": ["A (1995)", "B (1993)", "C (1985)", "D (1997)", "E (1999)", "F"],
        "year": ["1995", "1993", "1985", "1997", "1999", ""],
        "genres": ["Comedy|Drama", "Comedy", "Drama", "Action", "", "Comedy"],
    }
)
TEMPLATES = {
    "both": RequestTemplate("something from the {decade}: {genres}"),
    "genre": RequestTemplate("a {genres}"),
    "decade": RequestTemplate("something from the {decade}"),
}


def test_constraint_sets_by_hand_and_as_matches_computes_them():
    by_hand = {  # requests written from item a (1990s, comedy or drama) and e (1990s, no genre)
        ("both", "a"): [1, 1, 0, 0, 0, 0],
        ("genre", "a"): [1, 1, 1, 0, 0, 1],
        ("decade", "a"): [1, 1, 0, 1, 1, 0],
        ("both", "e"): [0] * 6,  # no genre: no request can be written
        ("genre", "e"): [0] * 6,
        ("decade", "e"): [1, 1, 0, 1, 1, 0],
        ("decade", "f"): [0] * 6,  # no year
    }
    for (name, item), expected in by_hand.items():
        row = constraint_matrix(ITEMS, [item], TEMPLATES[name])[0]
        assert row.astype(int).tolist() == expected, (name, item)
    for template in TEMPLATES.values():  # every writable request, as the reference says
        for item in ("a", "b", "c", "d"):
            reference = matches(ITEMS, ITEMS.set_index("item_id").loc[item], template)
            assert constraint_matrix(ITEMS, [item], template)[0].tolist() == reference
    with pytest.raises(ValueError, match="items.parquet has no field 'genres'"):
        constraint_matrix(ITEMS.drop(columns="genres"), ["a"], TEMPLATES["genre"])


def test_steerability_and_the_post_filtered_ranking_by_hand():
    lists = {"u1": ["d", "b", "c", "a", "f"], "u2": ["a", "e", "b", "c"]}
    targets = {"u1": ["a"], "u2": ["e"]}
    frame = steer_frame(lists, targets, ITEMS, TEMPLATES, cutoffs=[2, 4]).set_index("user_id")
    # u1, "both" (C = a, b): d no, b yes, c no, a yes
    assert frame.loc["u1", "steer_both_at_2"] == 0.5 and frame.loc["u1", "steer_both_at_4"] == 0.5
    # post-filtered to C: [b, a]; the target a at rank 2
    assert frame.loc["u1", "filtered_both_hr_at_2"] == 1.0
    assert frame.loc["u1", "filtered_both_ndcg_at_2"] == pytest.approx(1 / math.log2(3))
    # "genre" (C = a, b, c, f): 4 of the first 4; filtering keeps the order: a at rank 3
    assert frame.loc["u1", "steer_genre_at_4"] == 0.75
    assert frame.loc["u1", "filtered_genre_ndcg_at_4"] == pytest.approx(1 / math.log2(4))
    # u2's target has no genre: no request for the genre templates, NaN rather than 0
    assert np.isnan(frame.loc["u2", "steer_genre_at_2"])
    assert np.isnan(frame.loc["u2", "filtered_both_ndcg_at_4"])
    assert frame.loc["u2", "steer_decade_at_4"] == 0.75  # a, e, b in the 1990s; c not
    assert frame.loc["u2", "filtered_decade_hr_at_2"] == 1.0  # [a, e, b]: e at rank 2


def test_the_post_filter_reads_the_whole_list_below_the_cutoff():
    """A target below the cutoff moves up when items above it leave C(request): a model that
    ranked it 4th of 5 is a hit at 2 after filtering (C = a, b for a 'both' request from a)."""
    lists = {"u1": ["d", "b", "c", "a", "f"]}
    frame = steer_frame(lists, {"u1": ["a"]}, ITEMS, {"both": TEMPLATES["both"]}, cutoffs=[2])
    row = frame.set_index("user_id").loc["u1"]
    assert row["steer_both_at_2"] == 0.5  # of the list as ranked: d no, b yes
    assert row["filtered_both_hr_at_2"] == 1.0  # [b, a]: a at rank 2, from rank 4
    assert row["filtered_both_ndcg_at_2"] == pytest.approx(1 / math.log2(3))


def test_a_post_filtered_list_is_fully_steered_and_keeps_the_target():
    rng = np.random.default_rng(0)
    lists = {f"u{i}": list(rng.permutation(ITEMS["item_id"])) for i in range(20)}
    targets = {u: [str(ITEMS["item_id"][int(rng.integers(4))])] for u in lists}  # a..d: writable
    for name, template in TEMPLATES.items():
        allowed = dict(zip(ITEMS["item_id"], range(6), strict=True))
        filtered = {}
        for user, items in lists.items():
            keep = constraint_matrix(ITEMS, [targets[user][0]], template)[0]
            filtered[user] = [i for i in items if keep[allowed[i]]]
            assert targets[user][0] in filtered[user]  # the target satisfies its own request
        again = steer_frame(filtered, targets, ITEMS, {name: template}, cutoffs=[2, 6])
        assert (again[f"steer_{name}_at_2"] == 1.0).all()
        assert (again[f"steer_{name}_at_6"] == 1.0).all()
        once = steer_frame(lists, targets, ITEMS, {name: template}, cutoffs=[6])
        np.testing.assert_allclose(
            once[f"filtered_{name}_ndcg_at_6"], again[f"filtered_{name}_ndcg_at_6"]
        )


def test_the_evaluator_joins_steerability_to_the_test_metrics():
    """`evaluate_run`'s step: the steer columns joined to the per-user frame by user, and their
    means over the users a request could be written for in the summary."""
    from llm4rec.data.split import Split
    from llm4rec.evaluation.evaluate import evaluate_rankings
    from llm4rec.runner import with_steerability

    from .conftest import interactions_frame

    rows = [("u1", "d", 1), ("u1", "c", 2), ("u1", "a", 3), ("u2", "d", 1), ("u2", "c", 2)]
    rows += [("u2", "e", 3)]
    inter = interactions_frame(rows).assign(seq=range(6))
    inter["phase"] = ["train", "valid", "test"] * 2
    split = Split(inter, ITEMS.assign(description=""), {"checksums": {}})
    rankings = pd.DataFrame(
        {
            "user_id": ["u1"] * 3 + ["u2"] * 3,
            "rank": [1, 2, 3] * 2,
            "item_id": ["b", "f", "a", "a", "b", "e"],
            "score": [3.0, 2.0, 1.0] * 2,
        }
    )
    per_user, summary = evaluate_rankings(rankings, split, "test", [2, 3])
    steer = {"templates": {"genre": TEMPLATES["genre"]}, "cutoffs": [2]}
    joined, means = with_steerability(
        per_user.iloc[::-1].reset_index(drop=True),
        summary,
        rankings,
        split,
        steer,
    )
    by_user = joined.set_index("user_id")
    assert by_user.loc["u1", "steer_genre_at_2"] == 1.0  # b and f share comedy with a
    assert by_user.loc["u1", "ndcg_at_3"] == per_user.set_index("user_id").loc["u1", "ndcg_at_3"]
    assert np.isnan(by_user.loc["u2", "steer_genre_at_2"])  # e has no genre
    assert means["steer_genre_at_2"] == 1.0  # the mean over u1 alone
    assert means["ndcg_at_3"] == summary["ndcg_at_3"]


def test_a_steer_template_without_placeholders_is_refused_naming_it(tmp_path):
    import yaml

    from llm4rec.config import ConfigError, load_grid

    grid = {
        "name": "g",
        "seeds": [0],
        "evaluation": {"cutoffs": [10], "steer": {"templates": {"genre": "any movie"}}},
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": [{"name": "mostpop"}],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match=r"evaluation\.steer\.templates\.genre: request template"):
        load_grid(tmp_path / "grid.yaml")

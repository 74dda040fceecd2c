"""Steerability (llm4rec.evaluation.steerability): constraint sets of requests by hand on a six-item
fixture and against `matches` (the per-item reference), the share of a list inside them, chance
rates and lifts by hand (a random list's expected lift is 1, a fully steered list's 1 / chance), the
post-filter at one depth for every list, and counterfactual requests: drawn in proportion to the
catalogue, never an attribute of the target (every ml-100k test user)."""

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from llm4rec.data.requests import (
    AttributeDistribution,
    Request,
    RequestTemplate,
    counterfactual_request,
    item_request,
    matches,
)
from llm4rec.evaluation.steerability import constraint_matrix, request_matrix, steer_frame

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


def test_the_post_filter_reads_the_list_to_one_depth_below_the_cutoff():
    """A target below the cutoff moves up when items above it leave C(request), down to the
    filter depth: a model that ranked it 4th of 5 is a hit at 2 after filtering the first 4 items
    (C = a, b for a 'both' request from a), and is not when only the first 2 are filtered."""
    lists = {"u1": ["d", "b", "c", "a", "f"]}
    both = {"both": TEMPLATES["both"]}
    row = steer_frame(lists, {"u1": ["a"]}, ITEMS, both, [2], filter_depth=4).iloc[0]
    assert row["steer_both_at_2"] == 0.5  # of the list as ranked: d no, b yes
    assert row["filtered_both_hr_at_2"] == 1.0  # [b, a]: a at rank 2, from rank 4
    assert row["filtered_both_ndcg_at_2"] == pytest.approx(1 / math.log2(3))
    shallow = steer_frame(lists, {"u1": ["a"]}, ITEMS, both, [2], filter_depth=2).iloc[0]
    assert shallow["filtered_both_hr_at_2"] == 0.0  # [d, b] filtered: [b]


def test_the_post_filter_has_one_depth_for_a_deep_and_a_shallow_list():
    """A one-forward model's 50-deep list and a decoded row's 10-deep list that share their first
    10 items get the same post-filtered metrics: the items below 10 never move up."""
    rng = np.random.default_rng(1)
    n = 60
    items = pd.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(n)],
            "year": ["1995" if j % 3 else "1985" for j in range(n)],
            "genres": ["Comedy" if j % 2 else "Drama" for j in range(n)],
        }
    )
    targets, deep, shallow = {}, {}, {}
    for u in range(30):
        order = [f"i{j}" for j in rng.permutation(n)]
        targets[f"u{u}"] = [order[int(rng.integers(10, 50))]]  # below the first 10
        deep[f"u{u}"], shallow[f"u{u}"] = order[:50], order[:10]
    template = {"both": TEMPLATES["both"]}
    a = steer_frame(deep, targets, items, template, [10], filter_depth=10)
    b = steer_frame(shallow, targets, items, template, [10], filter_depth=10)
    for column in ("filtered_both_hr_at_10", "filtered_both_ndcg_at_10", "steer_both_at_10"):
        np.testing.assert_array_equal(a[column], b[column])
    assert (a["filtered_both_hr_at_10"] == 0).all()  # every target below rank 10 stays out
    whole = steer_frame(deep, targets, items, template, [10], filter_depth=50)
    assert whole["filtered_both_hr_at_10"].sum() > 0  # the old behaviour: targets came up


def test_chance_rate_and_lift_by_hand_on_five_items():
    """Five items; the target b's 'genre' request is "a comedy", C = {a, b, d, e}. A user with
    history {d} has 4 candidates (a, b, c, e), 3 of them in C: chance 3/4. Averaged over every
    ordering of the candidates a list's share is the chance rate (lift 1), and a list that puts C
    first has share 1 (lift 1 / chance)."""
    items = pd.DataFrame(
        {
            "item_id": list("abcde"),
            "year": ["1990"] * 5,
            "genres": ["Comedy", "Comedy", "Drama", "Comedy", "Comedy Drama"],
        }
    )
    template = {"genre": RequestTemplate("a {genres}")}
    # the target b's request is "a comedy": C = a, b, d, e; history d: candidates a, b, c, e
    history = {"u": ["d"]}
    candidates = ["a", "b", "c", "e"]
    chance = 3 / 4  # a, b, e of the 4 candidates
    shares = []
    for order in itertools.permutations(candidates):
        frame = steer_frame({"u": list(order)}, {"u": ["b"]}, items, template, [2], history)
        row = frame.iloc[0]
        assert row["chance_genre"] == pytest.approx(chance)
        shares.append(row["steer_genre_at_2"])
        assert row["lift_genre_at_2"] == pytest.approx(row["steer_genre_at_2"] / chance)
    assert np.mean(shares) == pytest.approx(chance)  # a random list: lift 1 in expectation
    steered = steer_frame({"u": ["a", "e", "b", "c"]}, {"u": ["b"]}, items, template, [2], history)
    assert steered.iloc[0]["steer_genre_at_2"] == 1.0
    assert steered.iloc[0]["lift_genre_at_2"] == pytest.approx(1 / chance)


def test_counterfactual_requests_follow_the_catalogue_and_never_the_target():
    """Among the values that share no attribute with the target, each is drawn in proportion to
    its count of catalogue items (checked over 6,000 users), seeded per user and wording."""
    items = pd.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(7)],
            "year": ["1995"] * 7,
            # comedy 1 item, drama 2, horror 3, action 1 (the target's)
            "genres": ["Comedy", "Drama", "Drama", "Horror", "Horror", "Horror", "Action"],
        }
    )
    template = RequestTemplate("a {genres}")
    distribution = AttributeDistribution.of(items, template)
    target = Request(("action",), "1990s")
    drawn = Counter(
        counterfactual_request(target, distribution, template, f"u{u}", 0).genres[0]
        for u in range(6000)
    )
    assert set(drawn) == {"comedy", "drama", "horror"}  # never the target's
    for genre, share in {"comedy": 1 / 6, "drama": 2 / 6, "horror": 3 / 6}.items():
        assert drawn[genre] / 6000 == pytest.approx(share, abs=0.02)
    again = counterfactual_request(target, distribution, template, "u7", 0)
    assert again == counterfactual_request(target, distribution, template, "u7", 0)
    everything = Request(("comedy", "drama", "horror", "action"), "1990s")
    assert counterfactual_request(everything, distribution, template, "u", 0) is None


def test_counterfactual_requests_never_match_any_ml_100k_test_target():
    """Every test user of the default ml-100k split, every template: the counterfactual request
    names no genre of the target and not its decade, so the target is outside its set C."""
    from llm4rec.data.preprocess import preprocess
    from llm4rec.data.sources import load_source
    from llm4rec.data.split import Split, make_split

    raw = load_source("ml-100k")
    kept, _ = preprocess(
        raw.interactions, rating_threshold=None, dedup="first", min_user=5, min_item=5, dataset="d"
    )
    labelled = make_split(kept, raw.items, {"method": "leave_one_out"})
    items = raw.items[raw.items["item_id"].isin(labelled["item_id"])].reset_index(drop=True)
    split = Split(labelled, items, {"checksums": {}})
    targets = {u: t[0] for u, t in split.targets("test").items()}
    by_id = items.set_index("item_id", drop=False)
    written = 0
    for template in TEMPLATES.values():
        distribution = AttributeDistribution.of(items, template)
        requests = []
        for user, target in targets.items():
            oracle = item_request(by_id.loc[target], template)
            request = counterfactual_request(oracle, distribution, template, user, 0)
            requests.append(request)
            if request is None:
                continue
            written += 1
            assert (
                not set(request.genres) & set(oracle.genres)
                or "genres" not in template.placeholders
            )
            assert request.decade != oracle.decade or "decade" not in template.placeholders
        allowed = request_matrix(items, requests, template)
        column = {item: j for j, item in enumerate(items["item_id"])}
        assert not any(allowed[row, column[t]] for row, t in enumerate(targets.values()))
    assert written > 2 * len(targets)  # nearly every user gets one for each of the 3 templates


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
    steer = {
        "templates": {"genre": TEMPLATES["genre"]},
        "cutoffs": [2],
        "filter_depth": 10,
        "counterfactual_seed": 0,
    }
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

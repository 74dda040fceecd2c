"""TIGER's cold-start retrieval (llm4rec.paradigms.semantic_id.cold_start): the insertion by hand,
and on a tiny TIGER: a split without unseen items is refused, and a ranking that inserts nothing
fails; with unseen items, each inserted item follows a decoded item sharing its quantized codes,
never more than ⌊epsilon·p⌋ of them in any top-p, never one of the user's history."""

import dataclasses

import pytest

from llm4rec.data.atomic import DataError
from llm4rec.models import MODELS, build_model
from llm4rec.paradigms.semantic_id.cold_start import ColdStartConfig, insert_unseen

from .helpers.tiger import parent as tiger_parent

parent = tiger_parent  # the fitted sid_tiger and its exports (a module-scoped fixture)

KEYS = {"a": (1,), "b": (2,), "c": (1,), "x": (1,), "y": (1,), "z": (2,), "w": (3,)}


def test_insertion_by_hand():
    ranked = [("a", -1.0), ("b", -2.0), ("c", -3.0), ("w", -4.0)]
    unseen = {(1,): ["x", "y"], (2,): ["z"]}
    # k 6, epsilon 0.5: at most floor(p / 2) inserted in every top-p. a retrieves x and y (its
    # key): x fits at 2; y waits until 4, after b (which retrieves z); z at 6. Each carries the
    # score of the item it follows.
    assert insert_unseen(ranked, KEYS, unseen, set(), 6, 0.5) == [
        ("a", -1.0),
        ("x", -1.0),
        ("b", -2.0),
        ("y", -2.0),
        ("c", -3.0),
        ("z", -3.0),
    ]
    # epsilon 0.34: floor(0.34 p) is 0 up to p 2, 1 from p 3, 2 at p 6: x at 3, y at 6
    assert [i for i, _ in insert_unseen(ranked, KEYS, unseen, set(), 6, 0.34)] == list("abxcwy")
    # the user's history is never inserted; a cap under one item in every top-k inserts nothing
    assert [i for i, _ in insert_unseen(ranked, KEYS, unseen, {"x"}, 4, 0.5)] == list("aybz")
    assert insert_unseen(ranked, KEYS, unseen, set(), 4, 0.2) == ranked
    # an unseen item the beam decoded itself stays where the beam put it and is not inserted
    # again (nor counted against the cap: z still fits at 5)
    decoded = [("a", -1.0), ("y", -1.5), ("b", -2.0)]
    assert [i for i, _ in insert_unseen(decoded, KEYS, unseen, set(), 10, 0.5)] == list("axybz")
    with pytest.raises(ValueError, match="epsilon must be in"):
        ColdStartConfig(epsilon=0.0)


def _row(parent, epsilon=0.5, **more):
    split, codes, policy, _ = parent
    return build_model(
        "sid_tiger_coldstart",
        {"epsilon": epsilon, **more},
        seed=0,
        device="cpu",
        inputs={"codes": codes, "policy": policy},
    )


def test_a_split_without_unseen_items_is_refused(parent, tmp_path):
    split = parent[0]
    with pytest.raises(DataError, match="needs the new-item protocol"):
        _row(parent).fit(split, tmp_path)


def _with_unseen(split, items):
    """The split with every training interaction of `items` dropped (they become unseen)."""
    inter = split.interactions
    dropped = (inter["phase"] == "train") & inter["item_id"].isin(items)
    return dataclasses.replace(split, interactions=inter[~dropped])


def test_the_key_is_the_quantized_codes_or_their_first_match_levels(parent, tmp_path):
    """The toy codes: 2 quantized levels + the disambiguation code. The default key is both
    quantized codes; match_levels 1 the first; 3 (the disambiguation level) is refused."""
    split, _, _, rec = parent
    split = _with_unseen(split, [str(split.items["item_id"].iloc[-1])])
    row = _row(parent)
    assert row.fit(split, tmp_path / "a")["match_levels"] == 2
    assert row.key_of == {item: tuple(t[:2]) for item, t in rec.sequences.items()}
    assert all(len(t) == 3 for t in rec.sequences.values())
    first = _row(parent, match_levels=1)
    first.fit(split, tmp_path / "b")
    assert first.key_of == {item: (t[0],) for item, t in rec.sequences.items()}
    with pytest.raises(ValueError, match="match_levels 3 exceeds the 2 quantized levels"):
        _row(parent, match_levels=3).fit(split, tmp_path / "c")


def test_unseen_items_are_inserted_after_a_decoded_item_with_their_codes(parent, tmp_path):
    split, _, _, rec = parent
    k, epsilon = 5, 0.4
    histories = dict(sorted(split.history("test").items())[:8])
    beam = rec.rank(histories, k)
    # make unseen (no training interaction) every item that shares its codes with some user's
    # first decoded item and is in nobody's beam or history here
    key_of = {item: tuple(t[:2]) for item, t in rec.sequences.items()}
    firsts = set(beam[beam["rank"] == 1]["item_id"])
    everywhere = set(beam["item_id"]) | {i for h in histories.values() for i in h}
    chosen = {
        item
        for item, key in key_of.items()
        if item not in everywhere and key in {key_of[f] for f in firsts}
    }
    assert chosen, "the toy codes give the first decoded items no sibling to make unseen"
    unseen_split = _with_unseen(split, chosen)
    row = _row(parent, epsilon)
    info = row.fit(unseen_split, tmp_path / "row")
    assert info["unseen_items"] == len(chosen) and row.key_of == key_of
    out = row.rank(histories, k)
    inserted_per_user = []
    for user, group in out.groupby("user_id"):
        items = group.sort_values("rank")["item_id"].tolist()
        decoded = beam[beam["user_id"] == user].sort_values("rank")["item_id"].tolist()
        inserted = [i for i in items if i not in decoded]
        inserted_per_user.append(len(inserted))
        assert len(items) == k and set(inserted) <= chosen
        assert not set(items) & set(histories[user])
        for p in range(1, k + 1):  # epsilon bounds the inserted share of every top-p
            assert sum(i in inserted for i in items[:p]) <= int(epsilon * p), (user, p)
        # the decoded items keep the beam's order; each inserted one follows a decoded item of its
        # key
        assert [i for i in items if i in decoded] == decoded[: k - len(inserted)]
        for position, item in enumerate(items):
            if item in inserted:
                assert any(key_of[i] == key_of[item] for i in items[:position] if i in decoded)
    assert sum(inserted_per_user) > 0
    assert row.inference_cost()["coldstart_inserted_per_user"] == pytest.approx(
        sum(inserted_per_user) / len(inserted_per_user)
    )
    # the new test targets that share a key with a trained item, by hand
    popularity = unseen_split.item_popularity()
    trained = {key_of[str(i)] for i in popularity.index[popularity.to_numpy() > 0]}
    new = [t[0] for t in unseen_split.targets("test").values() if popularity.loc[t[0]] == 0]
    assert info["new_test_targets"] == len(new)
    assert info["new_test_targets_sharing_key"] == sum(key_of[str(t)] in trained for t in new)
    # a cap that admits no inserted item in any top-5 (floor(0.1 p) = 0): the row fails, naming
    # its settings, rather than equal its parent
    capped = _row(parent, 0.1)
    capped.fit(unseen_split, tmp_path / "capped")
    with pytest.raises(DataError, match=r"inserted no unseen item for any of the 8 users.*epsilon"):
        capped.rank(histories, k)


def test_only_a_tiger_parent_is_accepted(monkeypatch):
    from llm4rec.llm import policy_export
    from llm4rec.models import BuildSpec, ResolvedInput
    from llm4rec.paradigms.semantic_id import cold_start

    from .helpers.protocol import protocol_gaps

    assert protocol_gaps(cold_start.ColdStartRecommender) == []
    spec = MODELS["sid_tiger_coldstart"]
    assert spec.parent == "sid_tiger" and spec.inputs["policy"].default == {"run": "sid_tiger"}
    assert "coldstart_inserted_per_user" in {c.key for c in spec.costs}

    class SidLlm:  # decodes semantic IDs too, but is not TIGER
        cfg = object()

    monkeypatch.setattr(
        policy_export,
        "policy_parent",
        lambda *a, **k: (None, {"recommender": "x:SidLlm"}, SidLlm()),
    )
    with pytest.raises(DataError, match="needs a sid_tiger parent"):
        cold_start.ColdStartRecommender(
            BuildSpec(
                "sid_tiger_coldstart",
                ColdStartConfig(),
                0,
                inputs={"policy": ResolvedInput({}, "p")},
            )
        )

"""Exact-ranking rows (llm4rec.paradigms.exact) on a tiny TIGER: the beam's agreement figures by
hand, the exact search never worse than the beam at any rank, its users a sample within the
parent's, and a parent that does not decode refused."""

import pandas as pd
import pytest
import yaml

from llm4rec.models import MODELS, POLICY_EXPORTS, BuildSpec, ResolvedInput, build_model
from llm4rec.paradigms.exact import beam_agreement

from .helpers.tiger import parent as tiger_parent


def _frame(lists: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(u, r + 1, i, 0.0) for u, items in lists.items() for r, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


def test_agreement_by_hand():
    beam = _frame({"a": ["1", "2", "3"], "b": ["4", "5", "6"], "c": ["7", "8", "9"]})
    exact = _frame({"a": ["2", "1", "3"], "b": ["4", "9", "6"], "c": ["1", "2", "3"]})
    # a: the same items in another order (no miss); b: 2 of 3; c: none
    figures = beam_agreement(beam, exact, 3)
    assert figures["beam_overlap_at_k"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert figures["beam_miss_pct"] == pytest.approx(200 / 3)
    at_1 = beam_agreement(beam, exact, 1)  # a's first items differ now
    assert at_1 == {
        "beam_overlap_at_k": pytest.approx(1 / 3),
        "beam_miss_pct": pytest.approx(200 / 3),
    }
    with pytest.raises(ValueError, match="different users"):
        beam_agreement(beam, exact[exact["user_id"] != "c"], 3)


parent = tiger_parent  # the fitted sid_tiger and its exports (a module-scoped fixture)


def test_the_exact_row_is_never_worse_than_the_beam_and_reports_their_agreement(parent, tmp_path):
    split, codes, policy, rec = parent
    row = build_model(
        "sid_tiger_exact", {}, seed=0, device="cpu", inputs={"codes": codes, "policy": policy}
    )
    info = row.fit(split, tmp_path)
    assert info["exact"] is True and info["exact_width"] == len(split.items)
    assert info["beam_width"] == rec.cfg.beam_width and info["parameters_trainable"] == 0
    histories = {u: list(h) for u, h in sorted(split.history("test").items())[:6]}
    k = 5
    exact = row.rank(histories, k)
    beam = rec.rank(histories, k)  # the parent's own lists for these users
    figures = row.inference_cost()
    assert {key: figures[key] for key in ("beam_overlap_at_k", "beam_miss_pct")} == pytest.approx(
        beam_agreement(beam, exact, k)
    )
    for user in histories:  # the exact top-k is the k most likely items: never below the beam's
        e = exact[exact["user_id"] == user]["score"].to_numpy()
        b = beam[beam["user_id"] == user]["score"].to_numpy()
        assert (e >= b - 1e-5).all(), user
        assert not set(exact[exact["user_id"] == user]["item_id"]) & set(histories[user])
    wider = build_model(
        "sid_tiger_exact",
        {"width": 2 * len(split.items), "batch_users": 3},
        seed=0,
        device="cpu",
        inputs={"codes": codes, "policy": policy},
    )
    wider.fit(split, tmp_path / "wider")
    pd.testing.assert_frame_equal(wider.rank(histories, k), exact, check_exact=False, atol=1e-5)


def test_the_rows_users_are_a_sample_within_its_parents(tmp_path):
    from llm4rec.config import load_grid
    from llm4rec.runner import evaluated_users

    grid = {
        "name": "g",
        "seeds": [0],
        "results_dir": str(tmp_path / "results"),
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": [
            {"name": "sid_tiger", "evaluation": {"test_users": 40}},
            {"name": "sid_tiger_exact", "evaluation": {"test_users": 7}},
        ],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    loaded = load_grid(tmp_path / "grid.yaml")

    class Targets:
        def targets(self, phase):
            return {f"u{i:03d}": ["x"] for i in range(300)}

    parent_users = evaluated_users(loaded, "sid_tiger", Targets(), "test")
    row_users = evaluated_users(loaded, "sid_tiger_exact", Targets(), "test")
    assert len(parent_users) == 40 and len(row_users) == 7
    assert set(row_users) <= set(parent_users)
    # a variant asking for more users than its parent ranked draws from every user, as before
    grid["models"][1]["evaluation"] = {"test_users": 60}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    wider = evaluated_users(load_grid(tmp_path / "grid.yaml"), "sid_tiger_exact", Targets(), "test")
    assert len(wider) == 60 and not set(wider) <= set(parent_users)


def test_only_generative_parents_have_exact_rows():
    from llm4rec.paradigms.exact import ExactRecommender

    from .helpers.protocol import protocol_gaps

    assert protocol_gaps(ExactRecommender) == []
    rows = {s.parent for s in MODELS.values() if s.factory == "llm4rec.paradigms.exact:build"}
    assert rows == {"text_prompted", "cf_llara", "sid_tiger", "sid_llm"}
    for name in rows:
        assert set(POLICY_EXPORTS) <= set(MODELS[name].exports)
        keys = {c.key for c in MODELS[f"{name}_exact"].costs}
        assert {"beam_overlap_at_k", "beam_miss_pct"} <= keys


def test_a_parent_that_does_not_decode_is_refused(tmp_path, monkeypatch):
    """A parent that ranks by one forward over an item head (its declared `one_forward`: E4SRec,
    IDIOMoE) has no beam to compare with; the generative ones do not declare it."""
    from llm4rec.llm import policy_export
    from llm4rec.paradigms import exact
    from llm4rec.paradigms.cf_injected import CfE4SRecRecommender, CfLlaraRecommender
    from llm4rec.paradigms.idiomoe import IdiomoeRecommender
    from llm4rec.paradigms.semantic_id.llm import SidLlmRecommender
    from llm4rec.paradigms.semantic_id.tiger import TigerRecommender
    from llm4rec.paradigms.text_prompted import TextPromptedRecommender

    assert CfE4SRecRecommender.one_forward and IdiomoeRecommender.one_forward
    generative = (TextPromptedRecommender, CfLlaraRecommender, SidLlmRecommender, TigerRecommender)
    assert not any(cls.one_forward for cls in generative)

    class OneForward:
        one_forward = True

    monkeypatch.setattr(
        policy_export,
        "policy_parent",
        lambda *a, **k: (None, {"recommender": "x:OneForward"}, OneForward()),
    )
    with pytest.raises(ValueError, match="does not rank by beam search"):
        exact.ExactRecommender(
            BuildSpec(
                "idiomoe_exact", exact.ExactConfig(), 0, inputs={"policy": ResolvedInput({}, "p")}
            )
        )

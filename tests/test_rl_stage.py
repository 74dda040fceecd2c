"""The GRPO stage as a run (llm4rec.paradigms.grpo_stage) on a tiny TIGER: the parent's exported
policy is rebuilt bit for bit, the stage's step 0 is the parent (validation score, KL 0, ratio 1), a
resumed run equals an uninterrupted one, and weights or inputs other than the parent's are
refused."""

import shutil

import pytest
import torch

from llm4rec.data.atomic import DataError
from llm4rec.models import MODELS, POLICY_EXPORTS, ResolvedInput, build_model

from .helpers.tiger import _codes, parent  # noqa: F401  (a fixture, taken by name)

GRPO = {
    "steps": 6,
    "prompts_per_step": 8,
    "group_size": 4,
    "learning_rate": 3e-3,
    "valid_users": 16,
    "eval_every": 3,
    "checkpoint_every": 3,
}


def _grpo(parent, **changes):
    split, codes, policy, _ = parent
    return build_model(
        "sid_tiger_grpo",
        GRPO | changes,
        seed=0,
        device="cpu",
        inputs={"codes": codes, "policy": policy},
    )


def test_the_stage_starts_exactly_at_the_parent(parent, tmp_path):
    split, _, _, rec = parent
    stage = _grpo(parent, steps=1)
    info = stage.fit(split, tmp_path)
    # the rebuilt policy before any RL step: the parent's selected weights, so its validation
    # score on the same sample is the parent's selected score, and the first step's ratio is 1 and
    # its KL to the reference 0
    assert info["valid_ndcg_at_10_at_start"] == pytest.approx(rec.selection.score, abs=1e-12), (
        "step 0 is not the parent"
    )
    first = info["grpo_log"][0]
    # sampled groups: the k3 mean estimates the KL; one update: the clip cannot act, none logged
    assert first["kl"] == 0.0 and "clip_fraction" not in first
    assert info["policy"]["tensors"] == len(list(rec.model.parameters()))
    assert 0.0 <= first["zero_advantage_share"] <= 1.0 and first["entropy"] > 0
    assert info["grpo_prompts"] > 0 and info["grpo_steps_run"] == 1


def test_the_log_names_what_it_computes(parent, tmp_path):
    """Beam groups are not samples of the policy: their k3 mean is logged as the penalty at the
    beam's items, never as "kl"; the clip fraction appears where a second update lets it act."""
    split = parent[0]
    beam = _grpo(parent, steps=1, sampler="beam").fit(split, tmp_path / "beam")["grpo_log"][0]
    assert "kl" not in beam and beam["k3_at_beam_items"] == 0.0
    twice = _grpo(parent, steps=1, updates_per_batch=2).fit(split, tmp_path / "two")["grpo_log"][0]
    assert 0.0 <= twice["clip_fraction"] <= 1.0 and twice["kl"] == 0.0


def test_a_resumed_stage_equals_an_uninterrupted_one(parent, tmp_path):
    split = parent[0]
    whole = _grpo(parent)
    whole_info = whole.fit(split, tmp_path / "whole")
    _grpo(parent, steps=3).fit(split, tmp_path / "resumed")
    resumed = _grpo(parent)
    resumed_info = resumed.fit(split, tmp_path / "resumed")
    assert resumed_info["grpo_steps_run"] == 3  # it continued from the checkpoint at step 3
    assert resumed_info["grpo_log"] == whole_info["grpo_log"]  # the sampler's RNG was restored
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert whole_info["valid_curve"] == resumed_info["valid_curve"]
    histories = {u: list(h) for u, h in split.history("test").items()}
    assert whole.rank(histories, 5).equals(resumed.rank(histories, 5))


def test_weights_or_inputs_other_than_the_parents_are_refused(parent, tmp_path):
    split, codes, policy, _ = parent
    other = _codes(split, tmp_path / "other", seed=1)
    with pytest.raises(DataError, match="input 'codes' .* differs from the one the policy's"):
        build_model(
            "sid_tiger_grpo", GRPO, seed=0, device="cpu", inputs={"codes": other, "policy": policy}
        )
    with pytest.raises(DataError, match="this run has seed 1"):
        build_model(
            "sid_tiger_grpo", GRPO, seed=1, device="cpu", inputs={"codes": codes, "policy": policy}
        )
    copied = tmp_path / "exports"
    shutil.copytree(policy.paths["policy.pt"].parent, copied)
    state = torch.load(copied / "policy.pt", weights_only=True)
    next(iter(state["trainable"].values())).add_(1.0)
    torch.save(state, copied / "policy.pt")
    changed = ResolvedInput({n: copied / n for n in POLICY_EXPORTS}, "changed")
    with pytest.raises(DataError, match="policy.pt: sha256 differs"):
        build_model(
            "sid_tiger_grpo", GRPO, seed=0, device="cpu", inputs={"codes": codes, "policy": changed}
        )


def test_every_policy_exporting_paradigm_declares_the_export():
    """A recommender class writes policy files exactly when its registry entry declares them, and
    every RL stage consumes a parent that does."""
    from llm4rec.paradigms.cf_injected import CfE4SRecRecommender, CfLlaraRecommender
    from llm4rec.paradigms.idiomoe import IdiomoeRecommender
    from llm4rec.paradigms.semantic_id.llm import SidLlmRecommender
    from llm4rec.paradigms.semantic_id.tiger import TigerRecommender
    from llm4rec.paradigms.text_prompted import TextPromptedRecommender

    classes = {
        "text_prompted": TextPromptedRecommender,
        "cf_llara": CfLlaraRecommender,
        "cf_e4srec": CfE4SRecRecommender,
        "idiomoe": IdiomoeRecommender,
        "sid_tiger": TigerRecommender,
        "sid_llm": SidLlmRecommender,
    }
    for name, cls in classes.items():
        assert cls.exports_policy == (set(POLICY_EXPORTS) <= set(MODELS[name].exports)), name
    stages = [s for s in MODELS.values() if s.factory == "llm4rec.paradigms.grpo_stage:build"]
    assert {s.parent for s in stages} == {"sid_tiger", "sid_llm", "text_prompted"}
    for spec in stages:
        assert set(POLICY_EXPORTS) <= set(MODELS[spec.parent].exports), spec.name

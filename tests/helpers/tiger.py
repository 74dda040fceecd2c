"""A tiny TIGER and a fitted sid_tiger parent with its exports (semantic-ID, RL, cold-start and
exact-row tests)."""

import pytest

from llm4rec.models import POLICY_EXPORTS, ResolvedInput, build_model
from llm4rec.paradigms.semantic_id.codes import (
    SemanticIdConfig,
    build_semantic_ids,
)

from .idiomoe import TITLES, cyclic_split

TINY_T5 = {
    "t5": {
        "d_model": 16,
        "d_ff": 32,
        "num_heads": 2,
        "d_kv": 8,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "dropout": 0.0,
    },
    "max_history": 4,
    "sft": {"steps": 120, "batch_size": 16, "learning_rate": 1e-2, "checkpoint_every": 60},
    "beam_width": 5,
    "valid_users": 16,
    "eval_every": 60,
}


def _codes(split, folder, seed=0):
    build_semantic_ids(
        split, SemanticIdConfig(quantizer="random", levels=2, codebook_size=4), seed, folder
    )
    return ResolvedInput(
        {n: folder / n for n in ("codes.npy", "codebook_stats.json")}, f"codes seed {seed}"
    )


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A sid_tiger fitted for 20 steps on the cyclic split, and its exports."""
    folder = tmp_path_factory.mktemp("parent")
    split = cyclic_split([8] * len(TITLES))
    codes = _codes(split, folder / "codes")
    params = {**TINY_T5, "sft": {**TINY_T5["sft"], "steps": 20, "checkpoint_every": 20}}
    rec = build_model("sid_tiger", params, seed=0, device="cpu", inputs={"codes": codes})
    rec.fit(split, folder / "work")
    (folder / "exports").mkdir()
    assert set(rec.export(folder / "exports", split)) == set(POLICY_EXPORTS)
    policy = ResolvedInput({n: folder / "exports" / n for n in POLICY_EXPORTS}, "run sid_tiger")
    return split, codes, policy, rec

"""The text-prompted paradigm end to end on a tiny model and dataset, through the protocol."""

import pandas as pd
import pytest
import torch

from llm4rec.data.split import Split, leave_one_out_split
from llm4rec.evaluation.evaluate import evaluate_rankings, rankings_to_lists, selection_score
from llm4rec.llm.decoding import exhaustive_scores
from llm4rec.models import MODELS, build_model
from llm4rec.params import ParamsError

from .conftest import interactions_frame
from .helpers import tiny_backbone

TITLES = [
    "red car",
    "blue sky",
    "green house",
    "night train",
    "old river",
    "white tower",
    "dark forest",
    "gold coin",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 users walking the catalogue in one cyclic order (a learnable next-item pattern)."""
    rows, n = [], len(TITLES)
    for u in range(8):
        for t in range(6):
            rows.append((f"u{u}", str((u + t) % n), float(t)))
    labelled = leave_one_out_split(interactions_frame(rows))
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(n)],
            "title": TITLES,
            "year": "2001",
            "genres": "",
            "description": "",
        }
    )
    split = Split(
        labelled[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True),
        items,
        {"checksums": {}},
    )
    words = {w for t in TITLES for w in t.split()} | {"(", ")", "2001", "seen", ":", ";", "Next"}
    model, tokenizer = tiny_backbone(sorted(words), seed=0, init_std=0.1)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return split, folder


def params(folder, **extra):
    return {
        "backbone": {"name_or_path": str(folder)},
        "prompt": {"user": "seen : {history}", "system": None, "line": "{title} ;"},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "sft": {
            "steps": 30,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "checkpoint_every": 10,
        },
        "max_history": 3,
        "beam_width": 6,
        "valid_users": 8,
        "eval_every": 10,
        "max_train_examples": None,
        **extra,
    }


def test_registered_in_the_text_prompted_paradigm():
    assert (
        MODELS["text_prompted"].paradigm
        == MODELS["text_prompted_zeroshot"].paradigm
        == "text_prompted"
    )


def test_fine_tuned_model_ranks_valid_unseen_items_and_is_evaluated(tiny, tmp_path):
    split, folder = tiny
    rec = build_model("text_prompted", params(folder), seed=0, device="cpu")
    info = rec.fit(split, tmp_path)
    assert 0 < info["parameters_trainable"] < info["parameters_total"]
    assert info["train_examples"] == 8 * 3  # 4 training items per user -> 3 windows each
    assert info["best_step"] in (10, 20, 30) and 0 <= info["best_valid_ndcg_at_10_sample"] <= 1
    assert (tmp_path / "sft" / "last" / "state.pt").is_file()
    # the run record says which backbone was loaded, and that no code shipped with it ran
    # a local folder: no hub commit
    assert info["backbone"] == {
        "name_or_path": str(folder),
        "gguf_file": None,
        "trust_remote_code": False,
        "revision": None,
        "commit": None,
    }
    for phase in ("valid", "test"):
        history = split.history(phase)
        rankings = rec.rank({u: history[u] for u in split.targets(phase)}, 3)
        # refuses history/unknown items
        per_user, summary = evaluate_rankings(rankings, split, phase, [1, 3])
        assert len(per_user) == 8 and rankings.groupby("user_id").size().eq(3).all()
    assert rec.decode_stats.users >= 8 and rec.decode_stats.decoded_tokens > 0
    # the validation ranking was reused from checkpoint selection (same users and histories):
    # it equals ranking them again with the restored best weights
    history = split.history("valid")
    reused = rec.rank({u: history[u] for u in split.targets("valid")}, 3)
    rec._reuse_selection = False
    rec.inference_cost()  # reset the decoding counts
    fresh = rec.rank({u: history[u] for u in split.targets("valid")}, 3)
    pd.testing.assert_frame_equal(
        reused[["user_id", "rank", "item_id"]], fresh[["user_id", "rank", "item_id"]]
    )
    assert info["train_tokens"] > 0 and rec.inference_cost()["users"] == 8


def test_selection_ranks_in_eval_mode_so_its_rankings_are_the_selected_models(tiny, tmp_path):
    """With LoRA dropout on, the validation rankings made mid-training for checkpoint selection
    (and reused for the run's validation phase) equal ranking the restored weights afresh."""
    split, folder = tiny
    noisy = params(folder, lora={"rank": 4, "alpha": 8, "dropout": 0.3})
    rec = build_model("text_prompted", noisy, seed=0, device="cpu")
    rec.fit(split, tmp_path / "a")
    history = split.history("valid")
    users = {u: history[u] for u in split.targets("valid")}
    reused = rec.rank(users, 3)
    rec._reuse_selection = False
    fresh = rec.rank(users, 3)
    pd.testing.assert_frame_equal(reused, fresh)


def test_rerun_resumes_its_own_checkpoint_and_keeps_the_selected_one(tiny, tmp_path):
    """A longer rerun in the same work folder continues from the last checkpoint (only the new
    steps run) and still knows the best checkpoint of the first part; a changed configuration
    restarts from step 0."""
    split, folder = tiny
    first = build_model("text_prompted", params(folder), seed=0, device="cpu").fit(split, tmp_path)
    assert first["sft_steps_run"] == 30
    longer = params(folder, sft={**params(folder)["sft"], "steps": 40})
    second = build_model("text_prompted", longer, seed=0, device="cpu").fit(split, tmp_path)
    assert second["sft_steps_run"] == 10
    assert second["best_valid_ndcg_at_10_sample"] >= first["best_valid_ndcg_at_10_sample"]
    if second["best_step"] != 40:  # the step-40 checkpoint did not win: the earlier best is kept
        assert (second["best_step"], second["best_valid_ndcg_at_10_sample"]) == (
            first["best_step"],
            first["best_valid_ndcg_at_10_sample"],
        )
    changed = params(folder, lora={"rank": 2, "alpha": 4, "dropout": 0.0})
    assert (
        build_model("text_prompted", changed, seed=0, device="cpu").fit(split, tmp_path)[
            "sft_steps_run"
        ]
        == 30
    )


def test_zero_shot_trains_nothing(tiny, tmp_path):
    split, folder = tiny
    # the parent's params, shared
    rec = build_model("text_prompted_zeroshot", params(folder), seed=0, device="cpu")
    # the record says what runs
    assert rec.cfg.zero_shot and rec.cfg.lora is None and rec.cfg.sft.steps == 0
    info = rec.fit(split, tmp_path)
    assert info["zero_shot"] and info["parameters_trainable"] == 0 and "train_examples" not in info
    history = split.history("test")
    rankings = rec.rank({u: history[u] for u in split.targets("test")}, 3)
    evaluate_rankings(rankings, split, "test", [1, 3])
    assert not (tmp_path / "sft").exists()


def test_a_variant_refuses_params_that_contradict_it(tiny):
    _, folder = tiny
    with pytest.raises(
        ParamsError,
        match=r"text_prompted_zeroshot: params.zero_shot is False, but text_prompted_zeroshot "
        r"is text_prompted with zero_shot = True",
    ):
        build_model("text_prompted_zeroshot", params(folder, zero_shot=False), seed=0, device="cpu")


def test_unknown_parameter_is_named(tiny):
    _, folder = tiny
    with pytest.raises(ParamsError, match=r"text_prompted: unknown parameter 'sft.stepz'"):
        build_model("text_prompted", params(folder, sft={"stepz": 3}), seed=0, device="cpu")
    with pytest.raises(ParamsError, match=r"text_prompted: unknown parameter 'beam'"):
        build_model("text_prompted", params(folder, beam=3), seed=0, device="cpu")


def test_constrained_ranking_equals_exhaustive_scoring(tiny, tmp_path):
    """The paradigm's decoder (beam as wide as the catalogue) returns exactly the top-k of every
    unseen item's full log-likelihood under the same prompt, for the fine-tuned model."""
    split, folder = tiny
    rec = build_model("text_prompted", params(folder, beam_width=len(TITLES)), seed=0, device="cpu")
    rec.fit(split, tmp_path)
    rec._reuse_selection = False
    history = split.history("test")
    users = sorted(split.targets("test"))[:4]
    ranked = rankings_to_lists(rec.rank({u: history[u] for u in users}, 3))
    for user in users:
        ids = torch.as_tensor([rec.prompt(history[user]).ids])
        scores = exhaustive_scores(rec.model, ids, torch.ones_like(ids), rec.sequences)
        unseen = sorted((s, i) for i, s in scores.items() if i not in set(history[user]))
        assert ranked[user] == [i for _, i in sorted(unseen, key=lambda p: -p[0])[:3]]


def test_selection_metric_is_configurable(tiny, tmp_path):
    split, folder = tiny
    rec = build_model(
        "text_prompted",
        params(folder, sft={**params(folder)["sft"], "steps": 10}),
        seed=0,
        device="cpu",
        selection="hr_at_2",
    )
    info = rec.fit(split, tmp_path)
    assert info["selection_metric"] == "hr_at_2" and "best_valid_hr_at_2_sample" in info
    assert [p["step"] for p in info["valid_curve"]] == [10]
    # the score is the one evaluator's HR@2 of the selected step's rankings on the sample
    sample = list(rec.selection.histories)
    assert info["best_valid_hr_at_2_sample"] == selection_score(
        rec.selection.rankings, split, "hr_at_2", sample
    )

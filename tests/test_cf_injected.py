"""CF-injected paradigm (cf_llara, cf_e4srec and their permuted ablations) on a tiny random Llama:
the soft tokens reach the model (and only through their own item), the ablation is a permutation,
rankings are valid, resume is exact, the curriculum and catalogue checks hold."""

import numpy as np
import pytest
import torch

from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.llm.item_scoring import log_popularity_prior
from llm4rec.llm.prompts import left_pad
from llm4rec.llm.tokens import prompt_embeddings
from llm4rec.models import MODELS, ResolvedInput, build_model
from llm4rec.paradigms.cf_injected import catalogue_derangement

from .helpers import tiny_backbone
from .helpers.cf import WORDS, cf_table, cyclic_split


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = tiny_backbone(WORDS, seed=0, init_std=0.1, layers=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    np.save(folder / "item_embeddings.npy", cf_table())
    return cyclic_split(), folder


def source(folder) -> dict:
    return {
        "cf_source": ResolvedInput(
            {"item_embeddings.npy": folder / "item_embeddings.npy"}, "run sasrec/seed0 (test)"
        )
    }


def params(name: str, folder, **extra) -> dict:
    common = {
        "backbone": {"name_or_path": str(folder)},
        "text_retention": {"enabled": False},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "valid_users": 16,
        "eval_every": 10,
        "max_train_examples": None,
    }
    if name.startswith("cf_llara"):
        return (
            common
            | {
                "prompt": {"user": "items : {history}", "system": None, "line": "{title} ;"},
                "beam_width": 8,
                "max_history": 3,
                "sft": {
                    "steps": 20,
                    "batch_size": 8,
                    "learning_rate": 1e-2,
                    "checkpoint_every": 10,
                },
            }
            | extra
        )
    return (
        common
        | {
            "prompt": {"user": "items :{history}", "answer_prefix": "next :"},
            "max_history": 4,
            "loss_positions": "all",
            "sft": {"steps": 20, "batch_size": 8, "learning_rate": 1e-2, "checkpoint_every": 10},
        }
        | extra
    )


def build(name, folder, **extra):
    return build_model(
        name, params(name, folder, **extra), seed=0, device="cpu", inputs=source(folder)
    )


def test_registered_as_cf_injected_consuming_a_cf_run():
    for name in ("cf_llara", "cf_llara_permuted", "cf_e4srec", "cf_e4srec_permuted"):
        spec = MODELS[name]
        assert spec.paradigm == "cf_injected"
        assert spec.inputs["cf_source"].default == {"run": "sasrec"}
        assert spec.inputs["cf_source"].files == ("item_embeddings.npy",)


def test_the_ablation_is_a_fixed_derangement_of_the_catalogue(tiny, tmp_path):
    for n in (2, 3, 16, 1349):
        perm = catalogue_derangement(n, seed=0)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))
    np.testing.assert_array_equal(catalogue_derangement(50, 3), catalogue_derangement(50, 3))
    assert not np.array_equal(catalogue_derangement(50, 3), catalogue_derangement(50, 4))
    split, folder = tiny
    for name in ("cf_e4srec", "cf_llara"):
        plain, permuted = build(name, folder), build(f"{name}_permuted", folder)
        for rec in (plain, permuted):
            rec.model, rec.tokenizer = rec.load()
            rec.prepare(split)
        table, shuffled = plain.projector.table.numpy(), permuted.projector.table.numpy()
        perm = catalogue_derangement(len(table), 0)
        # the same rows, each under another item
        np.testing.assert_array_equal(shuffled, table[perm])
        np.testing.assert_array_equal(table, cf_table())  # the plain model reads the file as it is


def user_logits(rec, history):
    """The model's scores for one user's prompt: next-token (LLaRA) or item logits (E4SRec)."""
    with torch.no_grad():
        ids, mask, soft = left_pad([rec.prompt(history)], rec.tokenizer.pad_token_id)
        embeds = prompt_embeddings(rec.model, ids, soft)
        if hasattr(rec, "item_logits"):
            return rec.item_logits(ids, mask, embeds)[0]
        return rec.model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1]


@pytest.mark.parametrize("name", ["cf_llara", "cf_e4srec"])
def test_changing_one_items_cf_embedding_changes_only_the_users_who_have_it(tiny, tmp_path, name):
    split, folder = tiny
    # a zero head would hide it
    rec = build(name, folder, **({"head_init": "random"} if name == "cf_e4srec" else {}))
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    with_item, without_item = ["0", "1", "2"], ["4", "5", "6"]
    before = [user_logits(rec, h) for h in (with_item, without_item)]
    with torch.no_grad():
        rec.projector.table[1] += 1.0  # item "1"'s CF embedding
    after = [user_logits(rec, h) for h in (with_item, without_item)]
    assert (after[0] - before[0]).abs().max() > 1e-4  # the soft token reaches the model's output
    # and only through its own item's slot
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)


def test_llara_prompt_is_text_prompted_plus_one_soft_token_per_item(tiny):
    split, folder = tiny
    rec = build("cf_llara", folder)
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    history = ["3", "4", "5", "6"]  # max_history 3: the last three
    ids, positions, rows = rec.hybrid_prompt(history)
    text = rec.tokenizer.convert_ids_to_tokens(ids)
    # "Next:" ("Next" is out of the tiny vocabulary)
    assert text == [
        "items",
        ":",
        "blue",
        "car",
        "<pad>",
        ";",
        "blue",
        "sky",
        "<pad>",
        ";",
        "blue",
        "house",
        "<pad>",
        ";",
        "<unk>",
        ":",
    ]
    assert rows == [4, 5, 6] and [text[p] for p in positions] == ["<pad>"] * 3
    # without its soft tokens, the prompt is text_prompted's
    from llm4rec.paradigms.text_prompted import TextPromptedRecommender

    plain = [t for i, t in enumerate(ids) if i not in positions]
    assert plain == TextPromptedRecommender.prompt(rec, history).ids


@pytest.mark.parametrize("name", ["cf_llara", "cf_e4srec", "cf_e4srec_permuted"])
def test_rankings_are_valid_unseen_and_distinct(tiny, tmp_path, name):
    split, folder = tiny
    rec = build(name, folder)
    info = rec.fit(split, tmp_path)
    assert 0 < info["parameters_trainable"] < info["parameters_total"]
    assert info["cf_permuted"] == name.endswith("_permuted")
    k = 5
    for phase in ("valid", "test"):
        history = split.history(phase)
        rankings = rec.rank({u: history[u] for u in split.targets(phase)}, k)
        # refuses history and unknown items
        _, summary = evaluate_rankings(rankings, split, phase, [1, k])
        assert rankings.groupby("user_id").size().eq(k).all()
        assert not rankings.duplicated(["user_id", "item_id"]).any()
    if name == "cf_e4srec":
        # the next item on the cycle is learnable from the CF angle
        assert summary["hr_at_5"] >= 0.5
        assert rec.inference_cost()["users"] == 16  # the test phase: one forward row per user


def test_e4srec_untrained_layer_ranks_by_popularity(tiny):
    """cf_e4srec_allpos: a zero layer over a log-popularity bias ranks as MostPop at step 0."""
    split, folder = tiny
    rec = build("cf_e4srec", folder, item_bias="log_popularity", head_init="zero")
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    logits = user_logits(rec, ["1", "2"])
    torch.testing.assert_close(logits, log_popularity_prior(split, rec.items))


def test_e4srec_runs_the_papers_setup_by_default_and_the_harness_training_is_a_variant(tiny):
    """cf_e4srec: an answer prefix after the soft tokens, one label per window, a plain
    Linear(hidden, n_items, bias=False) with nn.Linear's initialisation; cf_e4srec_allpos (parent
    cf_e4srec) is the harness's training."""
    from llm4rec.models import check_params

    split, folder = tiny
    paper = check_params(MODELS["cf_e4srec"], {})
    assert (paper.prompt.answer_prefix, paper.loss_positions, paper.item_bias, paper.head_init) == (
        "Next item:",
        "last",
        "none",
        "random",
    )
    rec = build("cf_e4srec", folder, loss_positions="last", item_bias="none", head_init="random")
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    assert (
        rec.head.bias is None
        and type(rec.head.linear) is torch.nn.Linear
        and rec.head.linear.bias is None
    )
    assert rec.head.linear.weight.abs().sum() > 0  # not the zero start of the harness's head
    variant = check_params(MODELS["cf_e4srec_allpos"], {})
    assert MODELS["cf_e4srec_allpos"].parent == "cf_e4srec"
    assert (
        variant.prompt.answer_prefix,
        variant.loss_positions,
        variant.item_bias,
        variant.head_init,
    ) == (
        "",
        "all",
        "log_popularity",
        "zero",
    )


@pytest.mark.parametrize("name", ["cf_llara", "cf_e4srec"])
def test_resumed_training_equals_an_uninterrupted_run(tiny, tmp_path, name):
    split, folder = tiny
    # the curriculum's draws depend on the step only
    extra = {"curriculum_steps": 12} if name == "cf_llara" else {}
    whole = build(name, folder, **extra)
    whole.fit(split, tmp_path / "whole")
    half = build(name, folder, **extra, sft={**params(name, folder)["sft"], "steps": 10})
    half.fit(split, tmp_path / "resumed")
    resumed = build(name, folder, **extra)
    info = resumed.fit(split, tmp_path / "resumed")
    assert info["sft_steps_run"] == 10
    last = [
        torch.load(d / "sft" / "last" / "state.pt", weights_only=True)
        for d in (tmp_path / "whole", tmp_path / "resumed")
    ]
    assert last[0]["step"] == last[1]["step"] == 20 and set(last[0]["trainable"]) == set(
        last[1]["trainable"]
    )
    # the projector trains and is checkpointed
    assert any("cf_projector" in key for key in last[0]["trainable"])
    for key, value in last[0]["trainable"].items():
        torch.testing.assert_close(value, last[1]["trainable"][key], rtol=0, atol=1e-6)
    assert (whole.selection.step, whole.selection.score) == (
        resumed.selection.step,
        resumed.selection.score,
    )


def test_llara_curriculum_starts_text_only_and_ends_hybrid(tiny):
    """At step 0 of a curriculum every example is text_prompted's (the loss equals the plain
    causal-LM loss of the text-only examples); past curriculum_steps every example is hybrid."""
    from llm4rec.llm.training import causal_lm_loss

    split, folder = tiny
    rec = build("cf_llara", folder, curriculum_steps=10)
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    examples = rec.training_examples(split, np.random.default_rng(0))[:6]
    loss = rec.training_loss()
    plain = causal_lm_loss(rec.tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        assert float(loss(rec.model, examples, 0)[0]) == pytest.approx(
            float(plain(rec.model, [e[4] for e in examples], 0)[0])
        )
        hybrid = float(loss(rec.model, examples, 10)[0])
        assert hybrid != pytest.approx(float(plain(rec.model, [e[4] for e in examples], 0)[0]))
    assert [rec.hybrid_share(s) for s in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]


def test_a_source_from_another_catalogue_is_refused_naming_both_runs(tiny, tmp_path):
    split, folder = tiny
    np.save(tmp_path / "item_embeddings.npy", cf_table(12))
    inputs = {
        "cf_source": ResolvedInput(
            {"item_embeddings.npy": tmp_path / "item_embeddings.npy"}, "run bpr/seed3 (config abc)"
        )
    }
    rec = build_model("cf_e4srec", params("cf_e4srec", folder), seed=0, device="cpu", inputs=inputs)
    with pytest.raises(
        ValueError,
        match=r"cf_e4srec: .*item_embeddings.npy \(from run bpr/seed3 \(config abc\)\) has shape "
        r"\(12, 6\), but this run's catalogue \(items.parquet\) has 16 items",
    ):
        rec.fit(split, tmp_path / "run")
    with pytest.raises(ValueError, match="input 'cf_source' was not resolved"):
        build_model("cf_llara", params("cf_llara", folder), seed=0, device="cpu")


def test_llara_runs_its_curriculum_and_lora_on_every_projection_by_default(tiny):
    """LLaRA's setup: the curriculum spans the SFT budget (text-only prompts at step 0, all hybrid
    at the end) and LoRA adapts every projection; curriculum_steps: 0 turns the curriculum off."""
    from llm4rec.models import check_params

    _, folder = tiny
    paper = check_params(MODELS["cf_llara"], {"sft": {"steps": 40}})
    assert paper.curriculum_length == 40
    assert paper.lora.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    rec = build("cf_llara", folder, curriculum_steps=None)
    # sft.steps = 20
    assert (rec.hybrid_share(0), rec.hybrid_share(10), rec.hybrid_share(20)) == (
        0.0,
        0.5,
        1.0,
    )
    assert build("cf_llara", folder, curriculum_steps=0).hybrid_share(0) == 1.0


def test_a_request_ends_llaras_user_message_and_precedes_e4srecs_soft_tokens(tiny):
    """A steered row's request (llm4rec.paradigms.steered) in each CF-injected prompt: after the
    history in LLaRA's user message (the soft tokens where they were), between E4SRec's instruction
    and its soft tokens (their positions shifted by the request's length)."""
    split, folder = tiny
    history = ["3", "4", "5", "6"]
    llara = build("cf_llara", folder)
    llara.model, llara.tokenizer = llara.load()
    llara.prepare(split)
    llara.request_line = "{request} ;"
    ids, positions, rows = llara.hybrid_prompt(history)
    steered, steered_positions, steered_rows = llara.hybrid_prompt(history, "red sky")
    words = llara.tokenizer.convert_ids_to_tokens(steered)
    assert words == llara.tokenizer.convert_ids_to_tokens(ids[:-2]) + ["red", "sky", ";"] + [
        "<unk>",
        ":",
    ]
    assert steered_positions == positions and steered_rows == rows
    assert llara.prompt(history, "").ids == llara.prompt(history).ids  # no request: the plain one

    e4srec = build("cf_e4srec", folder)
    e4srec.model, e4srec.tokenizer = e4srec.load()
    e4srec.prepare(split)
    e4srec.request_line = "{request}"
    ids, positions, rows = e4srec.layout(history)
    steered, steered_positions, steered_rows = e4srec.layout(history, "red sky")
    words = e4srec.tokenizer.convert_ids_to_tokens(steered)
    assert words[:4] == ["items", ":", "red", "sky"] and steered_rows == rows
    # the plain prompt: the text before {history}, a soft token per item, the answer prefix
    pad = e4srec.tokenizer.pad_token_id
    assert e4srec.tokenizer.convert_ids_to_tokens(ids) == ["items", ":"] + [
        e4srec.tokenizer.convert_ids_to_tokens(pad)
    ] * len(history) + ["next", ":"]
    assert steered_positions == [p + 2 for p in positions]
    assert [steered[p] for p in steered_positions] == [ids[p] for p in positions]
    assert steered[-len(e4srec.prompt_tail) :] == e4srec.prompt_tail

"""IDIOMoE on tiny random Llama and Qwen2 backbones: token-type routing, the untouched text side,
the restricted item softmax, one forward per batch at ranking, resume, and errors."""

import dataclasses

import pytest
import torch

from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.llm.decoding import _decoder_stack
from llm4rec.models import build_model
from llm4rec.paradigms.idiomoe import TokenTypeExperts
from llm4rec.params import ParamsError

from .helpers import tiny_backbone
from .helpers.idiomoe import (
    SAMPLE,
    TITLES,
    WORDS,
    cyclic_split,
    params,
    save_qwen2,
    word_level_tokenizer,  # noqa: F401  (autouse: the fixtures' tokenizer)
)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, tmp_path_factory):
    """16 users walking the 16-item catalogue cyclically (a learnable next-item pattern)."""
    split = cyclic_split([8] * len(TITLES))
    model, tokenizer = tiny_backbone(WORDS, seed=0, init_std=0.1, layers=3)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "qwen2":
        save_qwen2(folder, tokenizer)
    else:
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "sample.txt").write_text(SAMPLE)  # the text-retention sample (params)
    return split, folder


def text_logits(rec, ids):
    with torch.no_grad():
        return rec.model(input_ids=ids).logits


def test_text_side_is_exactly_the_backbone_before_and_after_training(tiny, tmp_path):
    split, folder = tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backbone = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = AutoTokenizer.from_pretrained(folder)(
        "red car : blue sky items", return_tensors="pt"
    ).input_ids
    expected = text_logits(type("M", (), {"model": backbone}), ids)
    rec = build_model("idiomoe", params(folder), seed=0, device="cpu")
    info = rec.fit(split, tmp_path)
    assert info["expert_layers"] == [1, 2] and info["sft_steps_run"] == 40
    assert info["first_loss"] > info["final_loss"]  # the item side learned something
    assert torch.equal(text_logits(rec, ids), expected)
    # text retention: nothing lost
    assert info["costs"]["text_ppl_before"] == info["costs"]["text_ppl_after"]
    trainable = {n for n, p in rec.model.named_parameters() if p.requires_grad}
    assert trainable and all(
        ".item." in n
        or n.endswith(("embed_tokens.items", "embed_tokens.bias", "embed_tokens.head"))
        for n in trainable
    ), trainable


def test_each_token_type_goes_through_its_own_expert_only(tiny, tmp_path, monkeypatch):
    split, folder = tiny
    rec = build_model(
        "idiomoe", params(folder, sft={"steps": 1, "batch_size": 4}), seed=0, device="cpu"
    )
    rec.fit(split, tmp_path)
    seen = {"text": 0, "item": 0}
    experts = [m for m in _decoder_stack(rec.model).modules() if isinstance(m, TokenTypeExperts)]
    hooks = [
        getattr(e, kind).register_forward_hook(
            lambda _m, inp, _o, kind=kind: seen.__setitem__(kind, seen[kind] + inp[0].shape[0])
        )
        for e in experts
        for kind in ("text", "item")
    ]
    prompt = rec.prompt(["1", "2", "3"]).ids  # instruction (text) + 3 item tokens
    n_text = sum(1 for i in prompt if i < rec.types.first_item_id)
    # the routing is found once per pass (two nonzero calls, one host sync on a GPU); the
    # expert layers ask the host nothing (no `any`, no boolean-mask indexing)
    calls = {"nonzero": 0, "any": 0}
    for name in calls:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    with torch.no_grad():
        rec.item_logits(torch.tensor([prompt]), torch.ones((1, len(prompt)), dtype=torch.long))
    monkeypatch.undo()
    for h in hooks:
        h.remove()
    assert n_text == 2 and seen == {"text": len(experts) * n_text, "item": len(experts) * 3}
    assert len(experts) == 2 and calls == {"nonzero": 2, "any": 0}


def test_ranking_is_one_forward_per_batch_over_unseen_catalogue_items(tiny, tmp_path):
    split, folder = tiny
    rec = build_model("idiomoe", params(folder, batch_users=3), seed=0, device="cpu")
    rec.fit(split, tmp_path)
    calls = []
    handle = _decoder_stack(rec.model).model.register_forward_hook(lambda *a: calls.append(1))
    history = split.history("test")
    users = sorted(split.targets("test"))
    rec._reuse_selection = False
    rankings = rec.rank({u: history[u] for u in users}, 5)
    handle.remove()
    assert len(calls) == 6  # 16 users in batches of 3
    # refuses history and unknown items
    _, summary = evaluate_rankings(rankings, split, "test", [1, 5])
    assert rankings.groupby("user_id").size().eq(5).all()
    assert summary["hr_at_5"] >= 0.5  # the cyclic next item is learnable in 40 steps
    assert rec.inference_cost()["users"] == 16


def test_resumed_training_equals_an_uninterrupted_run(tiny, tmp_path):
    split, folder = tiny
    whole = build_model("idiomoe", params(folder), seed=0, device="cpu")
    whole.fit(split, tmp_path / "whole")
    half = build_model(
        "idiomoe", params(folder, sft={**params(folder)["sft"], "steps": 20}), seed=0, device="cpu"
    )
    half.fit(split, tmp_path / "resumed")
    resumed = build_model("idiomoe", params(folder), seed=0, device="cpu")
    info = resumed.fit(split, tmp_path / "resumed")
    assert info["sft_steps_run"] == 20
    # the step-40 weights of both runs (the last checkpoints) and the selection agree
    last = [
        torch.load(d / "sft" / "last" / "state.pt", weights_only=True)
        for d in (tmp_path / "whole", tmp_path / "resumed")
    ]
    assert last[0]["step"] == last[1]["step"] == 40 and set(last[0]["trainable"]) == set(
        last[1]["trainable"]
    )
    for name, value in last[0]["trainable"].items():
        torch.testing.assert_close(value, last[1]["trainable"][name], rtol=0, atol=1e-6)
    assert (whole.selection.step, whole.selection.score) == (
        resumed.selection.step,
        resumed.selection.score,
    )


def test_variants_narrow_expert_and_learned_router(tiny, tmp_path):
    split, folder = tiny
    rec = build_model(
        "idiomoe_learned_router",
        params(folder, item_expert_width=0.5, sft={"steps": 2, "batch_size": 4}),
        seed=0,
        device="cpu",
    )
    router_info = rec.fit(split, tmp_path)
    expert = next(m for m in _decoder_stack(rec.model).modules() if isinstance(m, TokenTypeExperts))
    assert (
        expert.gate is not None
        and expert.item.gate_proj.out_features == expert.text.gate_proj.out_features // 2
    )
    # started from the text expert's rows (2 steps of training since)
    torch.testing.assert_close(
        expert.item.down_proj.weight,
        expert.text.down_proj.weight[:, : expert.item.gate_proj.out_features],
        rtol=0,
        atol=0.2,
    )
    entangled = build_model(
        "idiomoe_entangled",
        params(folder, sft={"steps": 2, "batch_size": 4}, expert_layers="none"),
        seed=0,
        device="cpu",
    )
    info = entangled.fit(split, tmp_path / "entangled")
    assert info["expert_layers"] == [] and any(
        "lora_" in n for n, p in entangled.model.named_parameters() if p.requires_grad
    )
    # both move the text side: a text token is mixed with the item expert / passes LoRA-tuned FFNs
    for costs in (router_info["costs"], info["costs"]):
        assert costs["text_ppl_after"] != costs["text_ppl_before"]


def test_unknown_parameters_and_unsupported_architectures_are_named(tiny, tmp_path):
    split, folder = tiny
    with pytest.raises(ParamsError, match=r"idiomoe: unknown parameter 'expert_layer'"):
        build_model("idiomoe", params(folder, expert_layer="all"), seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"expert_layers 'first_2' is not all, none, last_N"):
        build_model("idiomoe", params(folder, expert_layers="first_2"), seed=0, device="cpu").fit(
            split, tmp_path
        )
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2)).save_pretrained(gpt2)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(folder).save_pretrained(gpt2)
    (gpt2 / "sample.txt").write_text(SAMPLE)
    rec = build_model("idiomoe", params(gpt2), seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"idiomoe: architecture 'gpt2' is not supported"):
        rec.fit(split, tmp_path / "g")
    assert dataclasses.is_dataclass(rec.cfg)


def test_untrained_item_softmax_is_the_popularity_prior(tiny):
    """idiomoe_popprior (the harness's head): untied item vectors starting at zero + log-popularity
    bias: before any step, every prompt's item logits are log(1 + training count) of each item, i.e.
    MostPop's ranking. idiomoe itself runs the paper's head: tied to the item embeddings, no
    bias."""
    _, folder = tiny
    from llm4rec.llm.backbone import BackboneConfig, load_backbone

    # a popularity skew
    split = cyclic_split([4 + u % 8 for u in range(16)], starts=[u % 3 for u in range(16)])
    rec = build_model("idiomoe_popprior", params(folder), seed=0, device="cpu")
    rec.model, rec.tokenizer = load_backbone(BackboneConfig(name_or_path=str(folder)))
    rec.prepare(split)
    counts = split.phase("train")["item_id"].value_counts()
    expected = torch.tensor(
        [float(torch.log1p(torch.tensor(float(counts.get(i, 0))))) for i in rec.items]
    )
    prompt = rec.prompt(["3", "4"]).ids
    # the text before {history} ("items :"), then an item token per history item
    assert rec.tokenizer.convert_ids_to_tokens(prompt[:2]) == ["items", ":"]
    assert prompt[2:] == [rec.types.first_item_id + rec.index[i] for i in ("3", "4")]
    with torch.no_grad():
        logits = rec.item_logits(
            torch.tensor([prompt]), torch.ones((1, len(prompt)), dtype=torch.long)
        )
    assert len(set(expected.tolist())) > 3
    torch.testing.assert_close(logits[0, -1], expected)
    tied = build_model("idiomoe", params(folder), seed=0, device="cpu")  # the paper's default
    tied.model, tied.tokenizer = load_backbone(BackboneConfig(name_or_path=str(folder)))
    tied.prepare(split)
    assert tied.head is None and tied.bias is None
    with pytest.raises(ValueError, match="item_bias 'pop' is not log_popularity, zero or none"):
        bad = build_model("idiomoe", params(folder, item_bias="pop"), seed=0, device="cpu")
        bad.model, bad.tokenizer = load_backbone(BackboneConfig(name_or_path=str(folder)))
        bad.prepare(split)

"""One precision policy for every registered LLM model (llm4rec.llm.precision), checked on a bf16
backbone on CPU: every parameter and buffer the model uses is registered in it (so it sits on the
backbone's device), frozen weights are in the backbone's dtype, trainable ones in fp32, and three
optimiser steps move every trainable tensor, including an output bias set to 8, where bf16's step is
0.0625 and an update of lr 1e-3 would round away (three: a zero-initialised head passes no gradient
back at step 1, and LoRA's A none while B is still zero at step 2). The trained model then ranks
with finite scores under bf16 autocast."""

import importlib

import numpy as np
import pytest
import torch

from llm4rec.llm.training import SFTConfig, train_sft
from llm4rec.models import MODELS, ResolvedInput, build_model
from llm4rec.paradigms.semantic_id.codes import SemanticIdConfig, build_semantic_ids

from .helpers import tiny_backbone
from .helpers.cf import WORDS as CF_WORDS
from .helpers.cf import cf_table, cyclic_split

# an RL stage needs its parent's exported policy: its bf16 run is the smoke test's (paper grid),
# its rebuild and training tests/test_rl_stage.py
LLM_MODELS = sorted(
    name
    for name, spec in MODELS.items()
    # AlphaRec: no LLM, fp32; RTA: its frozen LLM runs once in the llm_states artifact, the run
    # trains an fp32 aggregator over the stored states
    if spec.paradigm not in ("baseline", "lm_representation", "reindexed")
    and name != "emb_knn"
    # rows built on a parent's exported policy (their own tests restore it): RL, steered, exact,
    # cold-start
    and "policy" not in spec.inputs
)
WORDS = sorted(set(CF_WORDS) | {"seen", "next", ":", ";"})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision")
    model, tokenizer = tiny_backbone(WORDS, seed=0, init_std=0.1, layers=2)
    model.save_pretrained(folder / "llama")
    tokenizer.save_pretrained(folder / "llama")
    np.save(folder / "item_embeddings.npy", cf_table())
    split = cyclic_split()
    build_semantic_ids(
        split, SemanticIdConfig(quantizer="random", levels=2, codebook_size=4), 0, folder / "codes"
    )
    return split, folder


def params_for(name: str, folder) -> tuple[dict, dict]:
    """(params, inputs) of a tiny bf16 build of `name` (a variant: its parent's, less its own)."""
    params, inputs = family_params(name, folder)
    return {k: v for k, v in params.items() if k not in MODELS[name].overrides}, inputs


def family_params(name: str, folder) -> tuple[dict, dict]:
    llm = {
        "backbone": {"name_or_path": str(folder / "llama"), "dtype": "bf16"},
        "text_retention": {"enabled": False},
        "valid_users": 4,
        "eval_every": 100,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "max_train_examples": None,
    }
    sft = {"steps": 2, "batch_size": 4, "learning_rate": 1e-3}
    cf = {
        "cf_source": ResolvedInput({"item_embeddings.npy": folder / "item_embeddings.npy"}, "test")
    }
    codes = {
        "codes": ResolvedInput(
            {
                "codes.npy": folder / "codes" / "codes.npy",
                "codebook_stats.json": folder / "codes" / "codebook_stats.json",
            },
            "test",
        )
    }
    spec = MODELS[name]
    family = spec.parent or name
    if family in ("text_prompted", "cf_llara"):
        prompted = llm | {
            "prompt": {"user": "seen : {history}", "system": None, "line": "{title} ;"},
            "beam_width": 4,
            "max_history": 3,
            "sft": sft,
        }
        return prompted, (cf if family == "cf_llara" else {})
    if family == "cf_e4srec":
        return llm | {"prompt": {"user": "items :{history}"}, "max_history": 4, "sft": sft}, cf
    if family == "idiomoe":
        return llm | {
            "prompt": {"user": "items :{history}"},
            "expert_layers": "last_1",
            "max_history": 4,
            "sft": sft,
        }, {}
    if family == "sid_tiger":
        return {
            "t5": {
                "d_model": 16,
                "d_ff": 32,
                "num_heads": 2,
                "d_kv": 8,
                "encoder_layers": 1,
                "decoder_layers": 1,
            },
            "max_history": 4,
            "sft": sft,
            "beam_width": 4,
            "valid_users": 4,
            "eval_every": 100,
        }, codes
    if family == "sid_llm":
        return llm | {
            "prompt": {"user": "items :\n{history}", "answer_prefix": ":"},
            "max_history": 3,
            "beam_width": 4,
            "sft": sft,
        }, codes
    raise AssertionError(f"{name}: no tiny build here; every registered LLM model needs one")


def unregistered(rec) -> list[str]:
    """Tensors and modules the recommender holds that are not part of its model (so settling the
    model would not move them to the backbone's device)."""
    tensors = {t.data_ptr() for t in (*rec.model.parameters(), *rec.model.buffers())}
    modules = {id(m) for m in rec.model.modules()}
    found = []
    for key, value in vars(rec).items():
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and value.data_ptr() not in tensors
        ):
            found.append(key)
        elif isinstance(value, torch.nn.Module) and id(value) not in modules:
            found.append(key)
    return found


# where a ranking reads its scores: an item head's logits (one-forward rows), a decoding step's
SCORE_READERS = (
    ("llm4rec.paradigms.cf_injected", "top_unseen_items"),
    ("llm4rec.paradigms.idiomoe", "top_unseen_items"),
    ("llm4rec.llm.decoding", "_log_probs"),
    ("llm4rec.llm.seq2seq", "_log_probs"),
)


def score_dtypes(monkeypatch) -> list[torch.dtype]:
    """The dtypes of the logits every score reader is given, from now on, in call order."""
    seen: list[torch.dtype] = []
    for module, name in SCORE_READERS:
        original = getattr(importlib.import_module(module), name)

        def reader(logits, *args, original=original, **kwargs):
            seen.append(logits.dtype)
            return original(logits, *args, **kwargs)

        monkeypatch.setattr(f"{module}.{name}", reader)
    return seen


@pytest.mark.parametrize("name", LLM_MODELS)
def test_bf16_on_cpu_every_tensor_placed_trainables_in_fp32_and_all_of_them_train(
    world, name, monkeypatch
):
    split, folder = world
    heads = score_dtypes(monkeypatch)
    params, inputs = params_for(name, folder)
    rec = build_model(name, params, seed=0, device="cpu", inputs=inputs)
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    examples = (
        rec.training_setup(split, np.random.default_rng(0)) if rec.trains else rec.inference_setup()
    )
    # TIGER's T5 is its own model, in fp32
    backbone = torch.bfloat16 if "backbone" in params else torch.float32
    assert rec.compute_dtype == backbone
    assert unregistered(rec) == []
    device = next(rec.model.parameters()).device
    for tensor_name, tensor in (*rec.model.named_parameters(), *rec.model.named_buffers()):
        assert tensor.device == device, tensor_name
    named = dict(rec.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert bool(trainable) == rec.trains, name
    for n, p in named.items():
        if p.is_floating_point():
            assert p.dtype == (torch.float32 if n in trainable else backbone), (n, p.dtype)
    if rec.trains:
        biases = [n for n in trainable if n.endswith(("cf_head.bias", "embed_tokens.bias"))]
        assert bool(biases) == (name in ("cf_e4srec_allpos", "idiomoe_popprior")), biases
        with torch.no_grad():
            for n in biases:
                named[n].fill_(8.0)
        before = {n: named[n].detach().clone() for n in trainable}
        result = train_sft(
            rec.model,
            examples,
            SFTConfig(steps=3, batch_size=4, learning_rate=1e-3, weight_decay=0.0),
            rec.tokenizer.pad_token_id,
            None,
            "cpu",
            progress=False,
            loss_fn=rec.training_loss(),
            compute_dtype=rec.compute_dtype,
        )
        assert all(np.isfinite(result.losses)), result.losses
        unmoved = [n for n in trainable if torch.equal(named[n].detach(), before[n])]
        assert unmoved == [], unmoved
        for n in biases:
            # an fp32 step of about lr, not bf16's 0.0625
            assert 0 < (named[n].detach() - 8.0).abs().max() < 0.01
    histories = {u: list(h) for u, h in list(split.history("test").items())[:3]}
    heads.clear()
    ranked = rec.rank(histories, k=3)
    assert len(ranked) == 9 and np.isfinite(ranked["score"]).all()
    assert rec.model.training is False
    # under bf16 autocast, every score the ranking reads was computed in fp32 (precision.scoring)
    assert heads and set(heads) == {torch.float32}, heads


def test_fp32_heads_leave_no_bf16_ties_in_the_top_50():
    """A catalogue of 3,700 items and a vocabulary of 3,000 tokens, scored from bf16 hidden states
    under bf16 autocast. Computed in bf16 (as before: the head under autocast, a popularity bias up
    to 8 cast to bf16), most of the top 50 share their score with another item, and a GPU's topk
    orders ties arbitrarily. Computed by the fp32 heads (E4SRec's prediction layer, through
    `precision.fp32_linear`; an LM head under `precision.scoring`), the top 50 holds no tie and
    holds the fp32 computation's top 50."""
    from llm4rec.llm import precision
    from llm4rec.paradigms.cf_injected import ItemHead

    from .helpers import tiny_backbone

    def tied(scores: torch.Tensor) -> float:
        top = torch.topk(scores.float(), 50).values
        return float((top[:, 1:] == top[:, :-1]).float().mean())

    torch.manual_seed(0)
    hidden = torch.randn(16, 64).to(torch.bfloat16)
    prior = torch.log1p(torch.rand(3700) * 3000)  # log(1 + count): up to about 8
    head = ItemHead(64, 3700, prior, "random")
    with precision.autocast(torch.bfloat16, "cpu"):
        bf16 = head.linear(hidden) + head.bias.to(torch.bfloat16)
        fp32 = head(hidden)
    assert tied(bf16) > 0.3
    assert fp32.dtype == torch.float32 and tied(fp32) == 0
    exact = hidden.float() @ head.linear.weight.T + prior
    torch.testing.assert_close(fp32, exact, atol=1e-5, rtol=1e-6)
    # the same top 50 per user (as sets: two items 4 ulps apart may swap on another machine's
    # kernels; the 50th and 51st are at least 28 ulps apart here)
    for ours, theirs in zip(
        torch.topk(fp32, 50).indices, torch.topk(exact, 50).indices, strict=True
    ):
        assert set(ours.tolist()) == set(theirs.tolist())

    model, tokenizer = tiny_backbone([f"w{i}" for i in range(2996)], hidden=64, init_std=0.5)
    model = model.to(torch.bfloat16)
    ids = torch.randint(4, 3000, (8, 6))
    with torch.no_grad():
        with precision.autocast(torch.bfloat16, "cpu"):
            before = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        with precision.scoring(model, torch.bfloat16, "cpu"):
            after = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        last = model.model(input_ids=ids).last_hidden_state[:, -1].float()
    assert tied(before) > 0.3
    assert after.dtype == torch.float32 and tied(after) == 0
    torch.testing.assert_close(after, last @ model.lm_head.weight.float().T, atol=1e-4, rtol=1e-5)
    assert model.lm_head.forward.__func__ is torch.nn.Linear.forward  # restored on leaving
    with precision.fp32_output(model), precision.fp32_output(model):  # nested: one patch
        assert model(input_ids=ids, logits_to_keep=1).logits.dtype == torch.float32
    assert "forward" not in vars(model.lm_head)


@pytest.mark.parametrize("tied", [False, True])
def test_the_fp32_head_computes_what_the_model_s_own_head_does(tied):
    """On an fp32 model the fp32 output layer changes nothing: the same logits as the model's own
    head, for a plain LM head and for PEFT's trainable token rows on it (tied to the input
    embeddings or not), with those rows moved away from their start."""
    from llm4rec.llm import precision
    from llm4rec.llm.backbone import LoraSettings, add_lora

    from .helpers import tiny_backbone

    model, _ = tiny_backbone([f"w{i}" for i in range(40)], hidden=32, init_std=0.5)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    ids = torch.randint(4, 44, (3, 5))
    for wrapped in (False, True):
        if wrapped:
            model = add_lora(model, LoraSettings(rank=2, target_modules=["q_proj"]), [40, 41, 42])
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "trainable_tokens_delta" in name:
                        param.add_(torch.randn_like(param))
        with torch.no_grad():
            own = model(input_ids=ids).logits
            with precision.fp32_output(model):
                fp32 = model(input_ids=ids).logits
        torch.testing.assert_close(fp32, own, atol=1e-5, rtol=1e-5)


def test_an_fp32_backbone_on_a_gpu_computes_in_tf32_and_the_score_heads_in_ieee(monkeypatch):
    """The flags are process settings, so CPU can check what each context asks cuBLAS for: the
    fp32 backbone's context TF32, an fp32 head inside it ieee, each restored on exit."""
    from llm4rec.llm import precision

    matmul = torch.backends.cuda.matmul
    seen, linear = [], torch.nn.functional.linear
    monkeypatch.setattr(
        torch.nn.functional,
        "linear",
        lambda *args: seen.append(matmul.fp32_precision) or linear(*args),
    )
    before = matmul.fp32_precision
    x, weight = torch.randn(3, 4), torch.randn(5, 4)
    with precision.autocast(torch.float32, "cuda"):
        inside = matmul.fp32_precision
        precision.fp32_linear(x, weight)
        after_head = matmul.fp32_precision
    assert (inside, seen, after_head, matmul.fp32_precision) == ("tf32", ["ieee"], "tf32", before)
    with precision.autocast(torch.float32, "cpu"), precision.autocast(torch.bfloat16, "cpu"):
        assert matmul.fp32_precision == before  # on CPU nothing is asked of cuBLAS
    assert precision.tf32_used(torch.float32, "cuda:0")
    assert not precision.tf32_used(torch.bfloat16, "cuda") and not precision.tf32_used(
        torch.float32, "cpu"
    )

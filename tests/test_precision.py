"""One precision policy for every registered LLM model (llm4rec.llm.precision), checked on a bf16
backbone on CPU: every parameter and buffer the model uses is registered in it (so it sits on the
backbone's device), frozen weights are in the backbone's dtype, trainable ones in fp32, and three
optimiser steps move every trainable tensor, including an output bias set to 8, where bf16's step is
0.0625 and an update of lr 1e-3 would round away (three: a zero-initialised head passes no gradient
back at step 1, and LoRA's A none while B is still zero at step 2). The trained model then ranks
with finite scores under bf16 autocast."""

import numpy as np
import pytest
import torch

from llm4rec.llm.training import SFTConfig, train_sft
from llm4rec.models import MODELS, ResolvedInput, build_model
from llm4rec.paradigms.semantic_id.codes import SemanticIdConfig, build_semantic_ids

from .helpers import tiny_backbone
from .test_cf_injected import WORDS as CF_WORDS
from .test_cf_injected import cf_table, cyclic_split

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
        return llm | {"instruction": "items :", "max_history": 4, "sft": sft}, cf
    if family == "idiomoe":
        return llm | {
            "instruction": "items :",
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
            "instruction": "items :",
            "answer_prefix": ":",
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


@pytest.mark.parametrize("name", LLM_MODELS)
def test_bf16_on_cpu_every_tensor_placed_trainables_in_fp32_and_all_of_them_train(world, name):
    split, folder = world
    params, inputs = params_for(name, folder)
    rec = build_model(name, params, seed=0, device="cpu", inputs=inputs)
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    examples = (
        rec.training_setup(split, np.random.default_rng(0)) if rec.trains else rec.inference_setup()
    )
    backbone = (
        torch.bfloat16 if "backbone" in params else torch.float32
    )  # TIGER's T5 is its own model, in fp32
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
            assert (
                0 < (named[n].detach() - 8.0).abs().max() < 0.01
            )  # an fp32 step of about lr, not bf16's 0.0625
    histories = {u: list(h) for u, h in list(split.history("test").items())[:3]}
    ranked = rec.rank(histories, k=3)
    assert len(ranked) == 9 and np.isfinite(ranked["score"]).all()
    assert rec.model.training is False

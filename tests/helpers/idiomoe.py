"""The IDIOMoE tests' 16-item cyclic catalogue, word-level backbones and params (IDIOMoE,
semantic-ID, RL and steered-row tests)."""

import hashlib

import pandas as pd
import pytest
import torch

from llm4rec.data.split import Split, leave_one_out_split

from ..conftest import interactions_frame

TITLES = [
    f"{c} {n}" for c in ("red", "blue", "green", "old") for n in ("car", "sky", "house", "train")
]


WORDS = sorted({w for t in TITLES for w in t.split()} | {"items", ":"})


# text-only, for perplexity
SAMPLE = " ".join(TITLES[i % 7] + " : " + TITLES[(3 * i) % 16] for i in range(24))


@pytest.fixture(autouse=True)
def word_level_tokenizer(monkeypatch):
    """transformers picks a tokenizer class by model type (Qwen2's BPE for the Qwen2 fixture); the
    fixtures' tokenizer is the word-level one they were saved with."""
    import transformers

    monkeypatch.setattr(transformers, "AutoTokenizer", transformers.PreTrainedTokenizerFast)


def save_qwen2(folder, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        initializer_range=0.1,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)


def cyclic_split(lengths: list[int], starts: list[int] | None = None) -> Split:
    """User u walks the catalogue cyclically from item starts[u] (default u), lengths[u] items."""
    rows, n = [], len(TITLES)
    for u, length in enumerate(lengths):
        start = u if starts is None else starts[u]
        rows += [(f"u{u}", str((start + t) % n), float(t)) for t in range(length)]
    labelled = leave_one_out_split(interactions_frame(rows))
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(n)],
            "title": TITLES,
            "year": "",
            "genres": "",
            "description": "",
        }
    )
    return Split(
        labelled[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True),
        items,
        {"checksums": {}},
    )


def params(folder, **extra):
    return {
        "backbone": {"name_or_path": str(folder)},
        "prompt": {"user": "items :{history}"},
        "expert_layers": "last_2",
        "text_retention": {
            "path": str(folder / "sample.txt"),
            "start": "red",
            "chars": len(SAMPLE),
            "window": 16,
            "sha256": hashlib.sha256(SAMPLE.encode()).hexdigest(),
        },
        "sft": {"steps": 40, "batch_size": 8, "learning_rate": 2e-2, "checkpoint_every": 20},
        "valid_users": 16,
        "eval_every": 20,
        "max_train_examples": None,
        "max_history": 4,
        **extra,
    }

"""Test helpers made in code, imported by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from llm4rec.report.runs import RunRecord, runs_from_folders


def tiny_backbone(
    words: list[str], seed: int = 0, hidden: int = 32, layers: int = 2, init_std: float = 0.02
):
    """A randomly initialised Llama of the same architecture with a word-level tokenizer built
    in code (no download): for fast unit tests."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(words) - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        initializer_range=init_std,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def runs_from_results(runs_dir: str | Path) -> list[RunRecord]:
    """Every finished run below a grid's runs folder (<dataset>/<model>/seed<N>/)."""
    return runs_from_folders(sorted(Path(runs_dir).glob("*/*/seed*/metrics.json")))


REPO = Path(__file__).resolve().parents[2]


def snakemake_command(workdir: Path, grid: Path | str) -> list[str]:
    """`python -m snakemake` on the repository's Snakefile, run in `workdir` for the grid file
    `grid`; append flags (not targets: --config takes every word after it)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--config",
        f"grid={grid}",
    ]


def labelled_split(labelled, titles: list[str], year: str = ""):
    """A Split over `labelled` (leave_one_out_split's frame) and a catalogue of items '0'..'n-1'
    with the given titles, one year for all, no genres or description."""
    import pandas as pd

    from llm4rec.data.split import Split

    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(len(titles))],
            "title": titles,
            "year": year,
            "genres": "",
            "description": "",
        }
    )
    frame = labelled[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True)
    return Split(frame, items, {"checksums": {}})

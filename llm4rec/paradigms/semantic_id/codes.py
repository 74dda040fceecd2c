"""The item tokenizer of the semantic-ID paradigm: item text -> embedding -> code tuple.

The `semantic_ids` artifact (its own Snakemake rule, once per dataset, tokenizer config and
seed) writes `codes.npy` ([items, levels + 1], rows in items.parquet order) and
`codebook_stats.json`:

1. Each item's text ("Title (Year) | genres | description") is embedded by a sentence encoder
   or an LLM backbone (`llm4rec.llm.text_encoders`, shared with AlphaRec; cached).
2. A residual quantizer (`quantizers`: RQ-VAE by default, RQ-KMeans, or random codes for the
   ablation) gives `levels` codes per item from codebooks of `codebook_size`.
3. Items that share a tuple get a last disambiguation code 0, 1, 2, ... in catalogue order
   (TIGER); the others get 0, so every item has a unique tuple of the same length.

The stats record the collision rate before disambiguation, each level's codebook usage (share
of codes used, perplexity of the code distribution), the reconstruction error per level, and a
coherence check: how often two items sharing their first code share a genre, against two
random items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.requests import genre_sets
from llm4rec.data.split import Split
from llm4rec.io import write_json, write_npy
from llm4rec.llm.text_encoders import EncoderConfig, item_texts, text_embeddings

QUANTIZERS = ("rq_kmeans", "rq_vae", "random")
CODES_FILE, STATS_FILE = "codes.npy", "codebook_stats.json"


@dataclass(frozen=True)
class RqVaeConfig:
    hidden: tuple[int, ...] = (512, 256, 128)
    latent_dim: int = 32
    epochs: int = 500
    batch_size: int = 256
    learning_rate: float = 1e-3
    beta: float = 0.25  # commitment weight


@dataclass(frozen=True)
class SemanticIdConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: str = "rq_vae"  # rq_vae (TIGER, LC-Rec) | rq_kmeans | random
    levels: int = 3
    codebook_size: int = 32  # ml-100k's 1.3k items; TIGER used 256 on Amazon's tens of thousands
    kmeans_iters: int = 100
    rq_vae: RqVaeConfig = field(default_factory=RqVaeConfig)

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer '{self.quantizer}' is not one of: {', '.join(QUANTIZERS)}")
        if self.levels < 1 or self.codebook_size < 2:
            raise ValueError(
                f"levels ({self.levels}) must be >= 1 and codebook_size ({self.codebook_size}) >= 2"
            )


def disambiguate(codes: np.ndarray) -> tuple[np.ndarray, dict]:
    """Append TIGER's last level: 0, 1, 2, ... among items sharing a tuple (catalogue order), 0
    otherwise. Returns (unique [items, levels + 1] codes, collision facts)."""
    seen: dict[tuple, int] = {}
    extra = np.empty(len(codes), dtype=np.int64)
    for row, key in enumerate(map(tuple, codes.tolist())):
        extra[row] = seen.get(key, 0)
        seen[key] = extra[row] + 1
    sizes = np.array(list(seen.values()))
    colliding = int(sizes[sizes > 1].sum())
    facts = {
        "collision_rate": colliding / len(codes),
        "items_colliding": colliding,
        "tuples_shared": int((sizes > 1).sum()),
        "max_items_per_tuple": int(sizes.max()),
        "disambiguation_size": int(sizes.max()),
    }
    return np.concatenate([codes, extra[:, None]], axis=1), facts


def codebook_usage(codes: np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: share of the codebook used and perplexity (exp entropy) of the codes."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        out.append(
            {
                "level": level + 1,
                "used": float((counts > 0).mean()),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            }
        )
    return out


def first_code_coherence(first_codes: np.ndarray, genres: list[set[str]]) -> dict | None:
    """Share of item pairs with a common genre: pairs sharing their first code vs all pairs.
    Items without genres are left out; None when fewer than two items have genres."""
    keep = [i for i, g in enumerate(genres) if g]
    if len(keep) < 2:
        return None
    vocab = sorted(set().union(*(genres[i] for i in keep)))
    index = {g: j for j, g in enumerate(vocab)}
    onehot = np.zeros((len(keep), len(vocab)), dtype=np.float32)
    for row, i in enumerate(keep):
        onehot[row, [index[g] for g in genres[i]]] = 1
    share = (onehot @ onehot.T) > 0
    first = first_codes[keep]
    upper = np.triu(np.ones_like(share, dtype=bool), k=1)
    same = upper & (first[:, None] == first[None, :])
    same_rate = float(share[same].mean()) if same.any() else float("nan")
    random_rate = float(share[upper].mean())
    return {
        "same_first_code_pairs": int(same.sum()),
        "same_first_code_genre_rate": same_rate,
        "random_pair_genre_rate": random_rate,
        "ratio": same_rate / random_rate if random_rate else float("nan"),
    }


def quantize(vectors: np.ndarray, cfg: SemanticIdConfig, seed: int):
    from llm4rec.paradigms.semantic_id import quantizers

    if cfg.quantizer == "random":
        return quantizers.random_codes(len(vectors), cfg.levels, cfg.codebook_size, seed)
    if cfg.quantizer == "rq_vae":
        vae = cfg.rq_vae
        return quantizers.rq_vae(
            vectors,
            cfg.levels,
            cfg.codebook_size,
            tuple(vae.hidden),
            vae.latent_dim,
            vae.epochs,
            vae.batch_size,
            vae.learning_rate,
            vae.beta,
            cfg.kmeans_iters,
            seed,
        )
    return quantizers.rq_kmeans(vectors, cfg.levels, cfg.codebook_size, cfg.kmeans_iters, seed)


def build_semantic_ids(
    split: Split, params: SemanticIdConfig, seed: int | None, out_dir: Path
) -> dict:
    """The `semantic_ids` artifact: codes.npy and codebook_stats.json; returns the stats."""
    seed = 0 if seed is None else seed
    texts = item_texts(split.items, tuple(params.encoder.fields))
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise ValueError(
            f"items.parquet: item '{split.items['item_id'].iloc[empty[0]]}' has no text in fields "
            f"{', '.join(params.encoder.fields)} ({len(empty)} items); semantic IDs are learned "
            "from item text"
        )
    vectors = (
        text_embeddings(texts, params.encoder)
        if params.quantizer != "random"
        else np.zeros((len(texts), 1))
    )
    result = quantize(vectors, params, seed)
    codes, collisions = disambiguate(result.codes)
    stats = {
        "items": len(codes),
        "levels": params.levels,
        "codebook_size": params.codebook_size,
        "quantizer": params.quantizer,
        "embedding_dim": int(vectors.shape[1]) if params.quantizer != "random" else None,
        **collisions,
        "codebook": codebook_usage(result.codes, params.codebook_size),
        "reconstruction_error": result.reconstruction_error,
        "baseline_error": result.baseline_error,
        "coherence": first_code_coherence(result.codes[:, 0], genre_sets(split.items)),
    }
    write_npy(Path(out_dir) / CODES_FILE, codes)
    write_json(Path(out_dir) / STATS_FILE, stats)
    return stats


@dataclass(frozen=True)
class CodeVocabulary:
    """Token ids of codes for a model whose vocabulary is only codes (sid_tiger's T5): pad 0,
    EOS 1, then each level's codebook in turn, so a code's token says its level."""

    sizes: tuple[int, ...]  # codebook size per level (the last: the disambiguation level)
    pad_token_id: int = 0
    eos_token_id: int = 1
    first: int = 2

    @classmethod
    def of(cls, codes: np.ndarray) -> CodeVocabulary:
        return cls(tuple(int(codes[:, level].max()) + 1 for level in range(codes.shape[1])))

    @property
    def offsets(self) -> np.ndarray:
        return self.first + np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def __len__(self) -> int:
        return self.first + sum(self.sizes)

    def tokens(self, codes: np.ndarray) -> np.ndarray:
        """[items, levels] codes -> token ids."""
        return codes + self.offsets[None, :]


def load_code_table(paths: dict[str, Path], items: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """(codes, stats) of a `semantic_ids` artifact, the codes checked against the catalogue they
    must describe (one unique tuple per item)."""
    import json

    path = paths[CODES_FILE]
    codes = np.load(path)
    if codes.ndim != 2 or len(codes) != len(items):
        raise ValueError(
            f"{path}: expected [{len(items)} items, levels] codes for the split's catalogue, got "
            f"{codes.shape}"
        )
    if len({tuple(r) for r in codes.tolist()}) != len(codes):
        raise ValueError(
            f"{path}: code tuples are not unique (the disambiguation level is missing)"
        )
    return codes, json.loads(paths[STATS_FILE].read_text())


def semantic_id_costs(stats: dict) -> dict[str, float]:
    """The tokenizer's figures for the cost table (llm4rec.costs.SEMANTIC_ID_COSTS): collision rate
    before disambiguation, and codebook usage and perplexity averaged over the quantized levels."""
    levels = stats["codebook"]
    return {
        "sid_collision_pct": 100 * stats["collision_rate"],
        "sid_codes_used_pct": 100 * float(np.mean([level["used"] for level in levels])),
        "sid_code_perplexity": float(np.mean([level["perplexity"] for level in levels])),
    }

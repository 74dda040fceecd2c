"""Text-prompted recommendation: the history as item titles in a prompt, the next item's title
generated under catalogue constraints (P5/TALLRec-style, with a constrained decoder).

fit: load the backbone; unless zero-shot, fine-tune it (LoRA by default) on next-item windows
of the training split, selecting the checkpoint by NDCG@10 on a fixed sample of validation
users. rank: constrained beam search over the catalogue minus each user's history.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from llm4rec.data.split import Split
from llm4rec.evaluation.evaluate import rankings_to_lists, sample_users
from llm4rec.evaluation.metrics import hit_matrix, per_user_metrics
from llm4rec.io import stable_hash, write_with
from llm4rec.llm.backbone import BackboneConfig, LoraSettings, add_lora, load_backbone
from llm4rec.llm.decoding import (
    DecodeStats,
    constrained_beam_search,
    item_token_sequences,
    resolve_decoder,
)
from llm4rec.llm.identifiers import item_identifiers
from llm4rec.llm.prompts import PromptTemplate, render_prompt
from llm4rec.llm.training import (
    SFTConfig,
    encode_example,
    sliding_window_examples,
    train_sft,
    trainable_state,
)
from llm4rec.llm.trie import ItemTrie
from llm4rec.models import RANKING_COLUMNS


@dataclass(frozen=True)
class TextPromptedConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    zero_shot: bool = False
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None: full fine-tuning
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    sft: SFTConfig = field(default_factory=SFTConfig)
    max_train_examples: int | None = 2000  # a seeded sample of the training windows (None: all)
    beam_width: int = 50  # >= the ranking depth K
    batch_users: int = 32  # users decoded together (their beams share each forward pass)
    decoder: str = "auto"  # auto | shared_prefix | cache (see llm4rec.llm.decoding)
    valid_users: int = 100  # validation sample for checkpoint selection (sample_users, seed 0)
    eval_every: int = 50

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TextPromptedConfig:
        """Build from a grid config's `params`, naming any unknown key."""
        nested = {"backbone": BackboneConfig, "lora": LoraSettings, "prompt": PromptTemplate, "sft": SFTConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in params.items():
            if key not in known:
                raise KeyError(f"text_prompted: unknown parameter '{key}' (known: {', '.join(sorted(known))})")
            if key in nested and isinstance(value, dict):
                sub = {f.name for f in dataclasses.fields(nested[key])}
                unknown = sorted(set(value) - sub)
                if unknown:
                    raise KeyError(f"text_prompted: unknown parameter '{key}.{unknown[0]}' (known: {', '.join(sorted(sub))})")
                value = nested[key](**value)
            values[key] = value
        return cls(**values)


class TextPromptedRecommender:
    def __init__(self, cfg: TextPromptedConfig, seed: int, device: str):
        self.cfg, self.seed, self.device = cfg, seed, device
        self.decode_stats = DecodeStats()
        self._selection = None  # (histories, top-10 rankings) of the selected checkpoint's validation sample

    def inference_cost(self) -> dict[str, float]:
        """Decoding counts since the last call (the runner asks once per ranked phase)."""
        stats, self.decode_stats = self.decode_stats, DecodeStats()
        return stats.as_dict()

    def _prompt_ids(self, history: Sequence[str]) -> list[int]:
        titles = [self.identifiers[i] for i in list(history)[-self.cfg.sft.max_history:]]
        text = render_prompt(self.cfg.prompt, titles, self.tokenizer)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def fit(self, split: Split, workdir: Path) -> dict:
        cfg = self.cfg
        backbone = dataclasses.replace(cfg.backbone, device=self.device)
        self.model, self.tokenizer = load_backbone(backbone)
        self.identifiers, collisions = item_identifiers(split.items)
        prefix = "" if getattr(self.tokenizer, "chat_template", None) else " "
        self.sequences = item_token_sequences(self.tokenizer, self.identifiers, prefix=prefix)
        self.trie = ItemTrie.build(self.sequences)
        info: dict[str, Any] = {"identifier_collisions": collisions, "prompt_template": cfg.prompt.as_dict(),
                                "zero_shot": cfg.zero_shot,
                                "decoder": resolve_decoder(self.model, cfg.decoder)}
        if not cfg.zero_shot:
            info |= self._fine_tune(split, Path(workdir))
        info["decoding_during_fit"] = self.inference_cost()  # checkpoint selection's validation ranking
        info["parameters_total"] = sum(p.numel() for p in self.model.parameters())
        info["parameters_trainable"] = 0 if cfg.zero_shot else sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.model.eval()
        return info

    def _fine_tune(self, split: Split, workdir: Path) -> dict:
        cfg, rng = self.cfg, np.random.default_rng(self.seed)
        if cfg.lora is not None:
            self.model = add_lora(self.model, cfg.lora)
        train = split.phase("train")
        windows = sliding_window_examples({u: g.tolist() for u, g in train.groupby("user_id")["item_id"]}, cfg.sft.max_history)
        if cfg.max_train_examples and len(windows) > cfg.max_train_examples:
            windows = [windows[i] for i in sorted(rng.choice(len(windows), cfg.max_train_examples, replace=False))]
        encoded = [encode_example(self._prompt_ids(history), self.sequences[target]) for _, history, target in windows]
        valid_targets, valid_history = split.targets("valid"), split.history("valid")
        sample = sample_users(list(valid_targets), cfg.valid_users, seed=0)
        # everything but the step budget that shapes training: a checkpoint is resumed only under it
        fingerprint = stable_hash({"params": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "sft"},
                                   "seed": self.seed, "examples": stable_hash(encoded), "valid_sample": sample})
        best_path = workdir / "sft" / "best.pt"  # the selected checkpoint so far, so a resumed run keeps it
        best = _load_best(best_path, fingerprint)

        def select(step: int, _loss: float) -> None:
            if step % cfg.eval_every and step != cfg.sft.steps:
                return
            rankings = self.rank(selection_histories, 10)
            ranked = rankings_to_lists(rankings)
            lists = [ranked.get(u, []) for u in sample]
            ndcg = float(per_user_metrics(hit_matrix(lists, [valid_targets[u] for u in sample], 10),
                                          np.array([len(valid_targets[u]) for u in sample]), [10])["ndcg_at_10"].mean())
            if ndcg > best["ndcg"]:
                best.update(ndcg=ndcg, step=step, state=trainable_state(self.model), rankings=rankings)
                _save_best(best_path, best, fingerprint)
            self.model.train()

        selection_histories = {u: list(valid_history.get(u, [])) for u in sample}

        start = time.perf_counter()
        sft = dataclasses.replace(cfg.sft, seed=self.seed)  # batch order follows the run's seed
        result = train_sft(self.model, encoded, sft, self.tokenizer.pad_token_id, workdir / "sft", self.device,
                           on_step=select, fingerprint=fingerprint)
        if best["state"] is not None:
            with torch.no_grad():
                params = dict(self.model.named_parameters())
                for name, value in best["state"].items():
                    params[name].copy_(value)
            self._selection = (selection_histories, best["rankings"])
        return {"train_examples": len(encoded), "train_set_tokens": int(sum(len(ids) for ids, _ in encoded)),
                "train_tokens": result.tokens, "sft_steps_run": len(result.losses), "first_loss": result.losses[0] if result.losses else None,
                "final_loss": result.losses[-1] if result.losses else None, "valid_sample_users": len(sample),
                "best_valid_ndcg_at_10_sample": best["ndcg"], "best_step": best["step"],
                "sft_seconds": time.perf_counter() - start}

    @torch.no_grad()
    def rank(self, histories: Mapping[str, Sequence[str]], k: int) -> pd.DataFrame:
        self.model.eval()
        users = sorted(histories)
        selection = self._selection
        if selection and k <= 10 and selection[0] == {u: list(h) for u, h in histories.items()}:
            # the selected checkpoint already ranked exactly these users and histories (top-10): reuse it
            return selection[1][selection[1]["rank"] <= k].reset_index(drop=True)
        rows = []
        pad = self.tokenizer.pad_token_id
        batches = range(0, len(users), self.cfg.batch_users)
        for begin in tqdm(batches, desc=f"rank {len(users)} users", disable=len(batches) < 4, mininterval=10):
            batch = users[begin:begin + self.cfg.batch_users]
            prompts = [self._prompt_ids(histories[u]) for u in batch]
            length = max(len(p) for p in prompts)
            ids = torch.full((len(batch), length), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), length), dtype=torch.long)
            for row, p in enumerate(prompts):  # left padding: every prompt ends at the last column
                ids[row, length - len(p):] = torch.as_tensor(p)
                mask[row, length - len(p):] = 1
            results = constrained_beam_search(self.model, ids.to(self.device), mask.to(self.device), self.trie,
                                              max(self.cfg.beam_width, k), k, exclude=[histories[u] for u in batch],
                                              stats=self.decode_stats, decoder=self.cfg.decoder)
            for user, ranked in zip(batch, results, strict=True):
                rows += [(user, r + 1, item, score) for r, (item, score) in enumerate(ranked)]
        return pd.DataFrame(rows, columns=RANKING_COLUMNS)


def _save_best(path: Path, best: dict, fingerprint: str) -> None:
    rows = list(best["rankings"].itertuples(index=False, name=None))
    state = {"fingerprint": fingerprint, "ndcg": best["ndcg"], "step": best["step"], "state": best["state"], "rankings": rows}
    write_with(path, lambda tmp: torch.save(state, tmp))


def _load_best(path: Path, fingerprint: str) -> dict:
    """The best checkpoint of an earlier, interrupted run under the same fingerprint (else none)."""
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["fingerprint"] == fingerprint:
            return {"ndcg": saved["ndcg"], "step": saved["step"], "state": saved["state"],
                    "rankings": pd.DataFrame(saved["rankings"], columns=RANKING_COLUMNS)}
    return {"ndcg": -1.0, "step": 0, "state": None, "rankings": None}


def build(name: str, params: dict[str, Any], seed: int, device: str) -> TextPromptedRecommender:
    cfg = TextPromptedConfig.from_params(params)
    if name == "text_prompted_zeroshot":
        cfg = dataclasses.replace(cfg, zero_shot=True)
    return TextPromptedRecommender(cfg, seed, device)

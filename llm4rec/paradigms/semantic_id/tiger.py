"""sid_tiger: TIGER's generative retrieval (Rajput et al., NeurIPS 2023) on semantic IDs.

Data: as in TIGER, the user's token first (the user id hashed into `user_buckets` tokens, 2000 by
default; 0 leaves it out), then each training window's history items (the last `max_history`) as
their code tuples, flattened, then EOS; the target is the next item's code tuple. Model: a Hugging
Face T5 encoder-decoder initialised at random (TIGER: 4+4 layers, d_model 128, 6 heads of 64, MLP
1024, dropout 0.1), every weight trained, cross-entropy on the target's code tokens. Ranking:
the shared catalogue-constrained beam search over the trie of code tuples (history items
scored out, every output a real item), with each user's history encoded once
(`llm4rec.llm.seq2seq`). Training loop, checkpoint selection on the grid's validation metric
(default NDCG@10) and resume are the shared `LLMRecommender`'s.

`sid_random` is the same model on random code tuples of the same shape (the `semantic_ids`
artifact with `quantizer: random`): what the semantic structure of the codes buys.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, rank_users, sft_epochs, train_sequences
from llm4rec.llm.decoding import beam_search
from llm4rec.llm.prompts import Prompt
from llm4rec.llm.recommender import Blocked, LLMRecommender, Ranked, steps_budget
from llm4rec.llm.seq2seq import make_seq2seq_stepper, resolve_seq2seq_decoder
from llm4rec.llm.training import SFTConfig, token_array, training_windows
from llm4rec.llm.trie import ItemTrie
from llm4rec.models import BuildSpec
from llm4rec.paradigms.semantic_id.codes import (
    CODES_FILE,
    CodeVocabulary,
    load_code_table,
    semantic_id_costs,
)


@dataclass(frozen=True)
class T5Settings:
    d_model: int = 128
    d_ff: int = 1024
    num_heads: int = 6
    d_kv: int = 64
    encoder_layers: int = 4
    decoder_layers: int = 4
    dropout: float = 0.1


@dataclass(frozen=True)
class TigerConfig:
    t5: T5Settings = field(default_factory=T5Settings)
    max_history: int = 20  # history items in the encoder input (x code tuple length tokens)
    sft: SFTConfig = field(
        default_factory=lambda: SFTConfig(
            steps=2000, batch_size=256, learning_rate=1e-3, checkpoint_every=200
        )
    )
    max_train_examples: int | None = None  # a seeded sample of the training windows (None: all)
    beam_width: int = 50  # >= the ranking depth K
    decoder: str = "auto"  # auto | shared_encoder | generic (llm4rec.llm.seq2seq)
    batch_users: int = 64
    valid_users: int = 200
    eval_every: int = 200
    lora: None = None  # trained from scratch: every weight trains
    # TIGER: the user id hashed into one of this many tokens, first in the encoder input (0: none)
    user_buckets: int = 2000


class TigerRecommender(LLMRecommender):
    cfg: TigerConfig
    exports_policy = True  # the GRPO stage's starting point (sid_tiger_grpo)

    @property
    def reads_text(self) -> bool:
        return False  # a model of code sequences: no text perplexity to retain

    @property
    def request_training(self) -> None:
        return None  # reads no request, so it trains with none (its config has no such setting)

    def load(self):
        """A randomly initialised T5 over the code vocabulary (seeded by the run's seed)."""
        from transformers import T5Config, T5ForConditionalGeneration

        codes = np.load(self.inputs["codes"].paths[CODES_FILE])
        self.vocab = CodeVocabulary.of(codes)
        t5 = self.cfg.t5
        if self.cfg.user_buckets < 0:
            raise ValueError(
                f"sid_tiger: user_buckets is {self.cfg.user_buckets}, expected 0 (no user token) "
                "or more"
            )
        config = T5Config(
            vocab_size=len(self.vocab) + self.cfg.user_buckets,
            d_model=t5.d_model,
            d_ff=t5.d_ff,
            num_heads=t5.num_heads,
            d_kv=t5.d_kv,
            num_layers=t5.encoder_layers,
            num_decoder_layers=t5.decoder_layers,
            dropout_rate=t5.dropout,
            pad_token_id=self.vocab.pad_token_id,
            eos_token_id=self.vocab.eos_token_id,
            decoder_start_token_id=self.vocab.pad_token_id,
        )
        torch.manual_seed(self.seed)
        return T5ForConditionalGeneration(config).to(self.device).eval(), self.vocab

    def prepare(self, split: Split) -> dict[str, Any]:
        """Code tuples as token ids, and the trie of the catalogue's tuples."""
        codes, stats = load_code_table(self.inputs["codes"].paths, split.items)
        tokens = self.vocab.tokens(codes)
        self.sequences = {
            str(item): row.tolist()
            for item, row in zip(split.items["item_id"], tokens, strict=True)
        }
        self.trie = ItemTrie.build(self.sequences)
        return {
            "semantic_ids": self.inputs["codes"].source,
            "code_length": codes.shape[1],
            "vocabulary": len(self.vocab),
            "codebook_stats": stats,
            "costs": semantic_id_costs(stats),
            "decoder": resolve_seq2seq_decoder(self.model, self.cfg.decoder),
        }

    def prompt(self, history: Sequence[str]) -> Prompt:
        items = list(history)[-self.cfg.max_history :]
        return Prompt(
            [token for item in items for token in self.sequences[item]] + [self.vocab.eos_token_id]
        )

    def user_token(self, user: str) -> int:
        """TIGER's hashing trick: a user's token is one of `user_buckets` ids after the code
        vocabulary (crc32 of the id, so the same user maps to the same token in every process)."""
        return len(self.vocab) + zlib.crc32(str(user).encode()) % self.cfg.user_buckets

    def user_prompt(self, user: str, history: Sequence[str], request: str = "") -> Prompt:
        # reads no text (reads_requests is False: rank refuses requests before they get here)
        prompt = self.prompt(history)
        return Prompt([self.user_token(user), *prompt.ids]) if self.cfg.user_buckets else prompt

    def training_examples(
        self, split: Split, rng: np.random.Generator
    ) -> list[tuple[list[int], list[int]]]:
        """(encoder ids, target code tokens) for every next-item window of the training split."""
        windows = training_windows(split, self.cfg.max_history, self.cfg.max_train_examples, rng)
        return [
            (token_array(self.user_prompt(user, history).ids), self.sequences[target])
            for user, history, target in windows
        ]

    def training_loss(self):
        pad, device = self.vocab.pad_token_id, self.device

        def loss(model, examples: list, step: int) -> tuple[torch.Tensor, int]:
            length = max(len(ids) for ids, _ in examples)
            ids = torch.full((len(examples), length), pad, dtype=torch.long)
            for row, (source, _) in enumerate(examples):
                ids[row, : len(source)] = torch.as_tensor(source)
            # fixed-length tuples
            labels = torch.as_tensor([target for _, target in examples], dtype=torch.long)
            mask = (ids != pad).long()
            out = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            )
            return out.loss, int(mask.sum()) + labels.numel()

        return loss

    def decode(
        self, ids: Tensor, mask: Tensor, inputs_embeds: Tensor | None, histories: Blocked, k: int
    ) -> Ranked:
        stepper = make_seq2seq_stepper(self.model, ids, mask, self.cfg.decoder)
        return beam_search(
            stepper, self.trie, max(self.cfg.beam_width, k), k, histories, self.decode_stats, mask
        )


def build(spec: BuildSpec) -> TigerRecommender:
    codes = {"codes": spec.inputs["codes"]}
    return TigerRecommender(spec.config, spec.seed, spec.device, spec.selection, codes)


train_budget = steps_budget  # MLflow's budget.train


def estimate_cost(config: TigerConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: a T5 trained from scratch on code sequences (every weight trains), a beam
    over the code's tokens."""
    t5, code = config.t5, cell.code_length()
    per_layer = 4 * t5.d_model * t5.num_heads * t5.d_kv + 2 * t5.d_model * t5.d_ff
    n = per_layer * (t5.encoder_layers + 1.5 * t5.decoder_layers)  # decoder: + cross-attention
    prompt = config.max_history * code + 2
    estimate = Estimate(weights=n, trainable=n)
    estimate.epochs = sft_epochs(config.sft.steps * config.sft.batch_size, cell.stats)
    layers = t5.encoder_layers + t5.decoder_layers
    train_sequences(
        estimate,
        n,
        n,
        prompt + code,
        config.sft.steps * config.sft.batch_size,
        micro_batches=config.sft.steps,
        layers=layers,
    )
    evaluations = config.sft.steps // max(config.eval_every, 1)
    for users in (cell.valid_users * evaluations, cell.test_users + cell.valid_users):
        rank_users(
            estimate, n, users, prompt, config.batch_users, config.beam_width, code, layers=layers
        )
    estimate.activation_bytes = config.sft.batch_size * (prompt + code) * t5.d_model * 40 * layers
    codebook = ((cell.inputs.get("codes") or {}).get("params") or {}).get("codebook_size", 256)
    estimate.layers, estimate.hidden, estimate.vocab = layers, t5.d_model, code * codebook
    estimate.identifier = code
    return estimate


def toy_params(params: dict[str, Any], steps: int) -> dict[str, Any]:
    """`llm4rec smoke`: a T5 of one block each side, 16 wide."""
    t5 = {"d_model": 16, "d_ff": 32, "num_heads": 2, "d_kv": 8}
    return params | {"t5": t5 | {"encoder_layers": 1, "decoder_layers": 1}}

"""Text-prompted recommendation: the history as item titles in a prompt, the next item's title
generated under catalogue constraints (P5/TALLRec-style, with a constrained decoder).

Items are written in as "Title (Year)" lines of a prompt template and read out by constrained
beam search over a trie of the catalogue's identifiers, minus the user's history. Training
(unless zero-shot): next-item windows of the training split, the loss on the target title's
tokens; the rest (backbone, LoRA, resumable SFT, checkpoint selection, batched ranking) is the
shared `llm4rec.llm.recommender.LLMRecommender`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from llm4rec.data.split import Split
from llm4rec.evaluation.metrics import SELECTION_METRIC
from llm4rec.llm.decoding import constrained_beam_search, item_token_sequences, resolve_decoder
from llm4rec.llm.identifiers import item_identifiers
from llm4rec.llm.prompts import Prompt, PromptTemplate, render_prompt
from llm4rec.llm.recommender import LLMConfig, LLMRecommender
from llm4rec.llm.training import next_item_examples
from llm4rec.llm.trie import ItemTrie


@dataclass(frozen=True)
class TextPromptedConfig(LLMConfig):
    zero_shot: bool = False
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    beam_width: int = 50  # >= the ranking depth K
    decoder: str = "auto"  # auto | shared_prefix | cache (see llm4rec.llm.decoding)


class TextPromptedRecommender(LLMRecommender):
    cfg: TextPromptedConfig

    @property
    def trains(self) -> bool:
        return not self.cfg.zero_shot

    def prepare(self, split: Split) -> dict[str, Any]:
        """Unique "Title (Year)" identifiers, their token sequences (EOS-terminated) and a trie."""
        self.identifiers, collisions = item_identifiers(split.items)
        prefix = "" if getattr(self.tokenizer, "chat_template", None) else " "
        self.sequences = item_token_sequences(self.tokenizer, self.identifiers, prefix=prefix)
        self.trie = ItemTrie.build(self.sequences)
        return {
            "identifier_collisions": collisions,
            "prompt_template": self.cfg.prompt.as_dict(),
            "zero_shot": self.cfg.zero_shot,
            "decoder": resolve_decoder(self.model, self.cfg.decoder),
        }

    def prompt(self, history: Sequence[str]) -> Prompt:
        titles = [self.identifiers[i] for i in list(history)[-self.cfg.max_history :]]
        text = render_prompt(self.cfg.prompt, titles, self.tokenizer)
        return Prompt(self.tokenizer(text, add_special_tokens=False).input_ids)

    def training_examples(
        self, split: Split, rng: np.random.Generator
    ) -> list[tuple[list[int], list[int]]]:
        """Sliding windows over each user's training sequence (a seeded sample of them): the
        last `max_history` items as the prompt, the next item's identifier as the answer."""
        cfg = self.cfg
        return next_item_examples(
            split, self.prompt, self.sequences, cfg.max_history, cfg.max_train_examples, rng
        )

    def decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        inputs_embeds: torch.Tensor | None,
        histories: Sequence[Sequence[str]],
        k: int,
    ) -> list[list[tuple[str, float]]]:
        return constrained_beam_search(
            self.model,
            ids,
            mask,
            self.trie,
            max(self.cfg.beam_width, k),
            k,
            exclude=histories,
            stats=self.decode_stats,
            decoder=self.cfg.decoder,
            inputs_embeds=inputs_embeds,
        )


def build(
    name: str,
    config: TextPromptedConfig,
    seed: int,
    device: str,
    selection: str = SELECTION_METRIC,
    inputs: dict | None = None,
) -> TextPromptedRecommender:
    return TextPromptedRecommender(config, seed, device, selection)

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

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, rank_users, sft_budget, sft_finish, train_sequences
from llm4rec.llm.decoding import item_token_sequences, resolve_decoder
from llm4rec.llm.identifiers import item_identifiers
from llm4rec.llm.prompts import Prompt, PromptTemplate, render_prompt
from llm4rec.llm.recommender import IdentifierDecoder, LLMConfig, steps_budget
from llm4rec.llm.trie import ItemTrie
from llm4rec.models import BuildSpec


@dataclass(frozen=True)
class TextPromptedConfig(LLMConfig):
    zero_shot: bool = False
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    beam_width: int = 50  # >= the ranking depth K
    decoder: str = "auto"  # auto | shared_prefix | cache (see llm4rec.llm.decoding)

    def __post_init__(self) -> None:
        self.prompt.check(("title", "index"))  # the identifier is the title


class TextPromptedRecommender(IdentifierDecoder):
    cfg: TextPromptedConfig
    reads_requests = True  # a request ends the user message

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

    def prompt(self, history: Sequence[str], request: str = "") -> Prompt:
        titles = [self.identifiers[i] for i in list(history)[-self.cfg.max_history :]]
        request = self.request_sentence(request)
        text = render_prompt(self.cfg.prompt, titles, self.tokenizer, request)
        return Prompt(self.tokenizer(text, add_special_tokens=False).input_ids)


def build(spec: BuildSpec) -> TextPromptedRecommender:
    return TextPromptedRecommender(spec.config, spec.seed, spec.device, spec.selection)


train_budget = steps_budget  # MLflow's budget.train


def estimate_cost(config: TextPromptedConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: SFT over prompts of titles (`prompted_estimate`)."""
    return prompted_estimate(config, cell)


def prompted_estimate(config: TextPromptedConfig, cell: Cell, soft: int = 0) -> Estimate:
    """A prompt of `max_history` titles (each with `soft` soft tokens, LLaRA's CF token) and an
    instruction (~40 tokens); SFT with the LM head at the target title's tokens; validation and
    test rankings by a beam of `beam_width` over a title's tokens + EOS."""
    estimate, budget = sft_budget(config, cell)
    shape, n, title = budget.shape, budget.shape.params, cell.stats["title_tokens"]
    prompt = 40 + config.max_history * (title + 1 + soft)
    trainable = budget.lora + (2 * 64 * shape.hidden + shape.hidden**2 if soft else 0)
    if budget.trains:
        train_sequences(
            estimate,
            n,
            trainable,
            prompt + title + 1,
            budget.examples,
            shape.vocab * shape.hidden,
            title + 1,
            **budget.passes,
        )
    validations = cell.valid_users * budget.evaluations if budget.trains else 0
    for users in (validations, cell.test_users + cell.valid_users):
        beams = (config.beam_width, title + 1)  # beams per user, decoding steps
        rank_users(estimate, n, users, prompt, config.batch_users, *beams, layers=shape.layers)
    estimate.identifier = title + 1
    return sft_finish(estimate, budget, trainable, prompt, config.sft.batch_size, title)

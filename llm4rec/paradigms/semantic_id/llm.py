"""sid_llm: semantic IDs as new tokens of a pretrained LLM (LC-Rec / NEO style).

Each code of each level becomes one new vocabulary token (`<a_5>`, `<b_17>`, ...; the level is
the letter), its embedding initialised at the mean of the existing rows and trained (peft's
trainable tokens: only the new rows change), with LoRA on the rest. The prompt is an
instruction, then one line per history item (`prompt.line`, default "{item}\n": its code
tuple; "{title} {item}\n" puts its "Title (Year)" first), then "Next:"; the answer is the next
item's code tuple, decoded by the shared catalogue-constrained beam search over the trie of code
tuples. Against `sid_tiger` (the same codes, a small T5 from scratch) it isolates what language
pretraining adds.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, rank_users, sft_budget, sft_finish, train_sequences
from llm4rec.llm.decoding import resolve_decoder
from llm4rec.llm.identifiers import item_identifiers
from llm4rec.llm.prompts import Prompt, PromptTemplate, placeholders, plain_prompt
from llm4rec.llm.recommender import IdentifierDecoder, LLMConfig, steps_budget
from llm4rec.llm.tokens import add_tokens
from llm4rec.llm.trie import ItemTrie
from llm4rec.models import BuildSpec
from llm4rec.paradigms.semantic_id.codes import load_code_table, semantic_id_costs


@dataclass(frozen=True)
class SidLlmConfig(LLMConfig):
    # a grid words it for its data; a line's {item} is the item's code tuple, {title} (optional)
    # its "Title (Year)"
    prompt: PromptTemplate = plain_prompt(
        "Items a user interacted with, oldest first:\n{history}", "{item}\n", "Next:"
    )
    max_history: int = 10
    code_init: str = "mean"  # new code tokens' embeddings: mean of the existing rows | random
    beam_width: int = 20  # >= the ranking depth K
    decoder: str = "auto"  # auto | shared_prefix | cache (llm4rec.llm.decoding)

    def __post_init__(self) -> None:
        self.prompt.check(("item", "title"), chat=False)
        if "title" in placeholders(self.prompt.around("item")[1]):
            raise ValueError(
                f"prompt.line must put {{title}} before {{item}}, got {self.prompt.line!r}"
            )

    @property
    def interleaves_titles(self) -> bool:
        """Each history line carries the item's title before its codes."""
        return "title" in placeholders(self.prompt.line)


def code_token(level: int, code: int) -> str:
    return f"<{string.ascii_lowercase[level]}_{code}>"


class SidLlmRecommender(IdentifierDecoder):
    cfg: SidLlmConfig
    reads_requests = True  # NEO-style: the request on its own line before the code history

    def prepare(self, split: Split) -> dict[str, Any]:
        """One new token per (level, code), each item's tuple as token ids, and their trie."""
        codes, stats = load_code_table(self.inputs["codes"].paths, split.items)
        names = [
            [code_token(level, code) for code in range(int(codes[:, level].max()) + 1)]
            for level in range(codes.shape[1])
        ]
        ids = add_tokens(
            self.model,
            self.tokenizer,
            [name for level in names for name in level],
            self.cfg.code_init,
            self.seed,
        )
        self.code_ids = ids
        offsets = np.cumsum([0] + [len(level) for level in names[:-1]])
        token_of = np.asarray(ids)
        self.sequences = {
            str(item): token_of[offsets + row].tolist()
            for item, row in zip(split.items["item_id"], codes, strict=True)
        }
        self.trie = ItemTrie.build(self.sequences)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
        self.prompt_head, self.prompt_tail = (encode(t) for t in self.cfg.prompt.around_history())
        before, after = self.cfg.prompt.around("item")
        titles = item_identifiers(split.items)[0] if self.cfg.interleaves_titles else {}
        # the line's text before the codes, per item (its title when the line holds one)
        self.line_before = {
            str(item): encode(before.format(title=titles.get(str(item), "")))
            for item in split.items["item_id"]
        }
        self.line_after = encode(after)
        return {
            "semantic_ids": self.inputs["codes"].source,
            "code_length": codes.shape[1],
            "code_tokens": len(ids),
            "codebook_stats": stats,
            "costs": semantic_id_costs(stats),
            "interleave_titles": self.cfg.interleaves_titles,
            "decoder": resolve_decoder(self.model, self.cfg.decoder),
        }

    def trainable_tokens(self) -> list[int]:
        return list(self.code_ids)

    def prompt(self, history: Sequence[str], request: str = "") -> Prompt:
        ids = list(self.prompt_head) + self.request_ids(request, lead="", end="\n")
        for item in list(history)[-self.cfg.max_history :]:
            ids += self.line_before[item] + self.sequences[item] + self.line_after
        return Prompt(ids + self.prompt_tail)


def build(spec: BuildSpec) -> SidLlmRecommender:
    codes = {"codes": spec.inputs["codes"]}
    return SidLlmRecommender(spec.config, spec.seed, spec.device, spec.selection, codes)


train_budget = steps_budget  # MLflow's budget.train


def estimate_cost(config: SidLlmConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: a prompt of max_history code lines (codes + separator, + the title when
    interleaved), the new code rows trained beside LoRA, a beam over the code's tokens."""
    estimate, budget = sft_budget(config, cell)
    shape, n, title = budget.shape, budget.shape.params, cell.stats["title_tokens"]
    code = cell.code_length()
    line = code + 1 + (title if config.interleaves_titles else 0)
    prompt = 10 + config.max_history * line
    trainable = budget.lora + 4 * code * 32 * shape.hidden
    vocab_head = shape.vocab * shape.hidden
    train_sequences(
        estimate, n, trainable, prompt + code, budget.examples, vocab_head, code, **budget.passes
    )
    for users in (cell.valid_users * budget.evaluations, cell.test_users + cell.valid_users):
        beams = (config.beam_width, code)  # beams per user, decoding steps
        rank_users(estimate, n, users, prompt, config.batch_users, *beams, layers=shape.layers)
    estimate.identifier = code
    return sft_finish(estimate, budget, trainable, prompt, config.sft.batch_size, title)

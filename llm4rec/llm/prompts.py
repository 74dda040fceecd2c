"""Prompt templates for text-prompted recommendation (kept in the grid config, logged with the run).

A template has a user message with a `{history}` slot, filled with one "Title (Year)" line per
history item (oldest first), and an optional system message. For instruct models the chat
template is applied, ending with the assistant prefix, so the item identifier follows the
prompt directly; for plain LMs the messages are joined as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Prompt:
    """One user's prompt as the model reads it: token ids, some of which may be soft tokens
    (`soft[position]` is a vector that replaces the embedding of the placeholder id there)."""

    ids: list[int]
    soft: dict[int, Any] = field(default_factory=dict)  # position -> torch.Tensor [D]


SOFT_SLOT = "\ue000"  # a private-use character: where a rendered prompt takes a soft token


def soft_slot_ids(tokenizer, text: str, placeholder_id: int) -> tuple[list[int], list[int]]:
    """Tokenize a prompt whose text marks soft tokens with SOFT_SLOT: (ids with `placeholder_id` at
    each slot, the slots' positions in order); the text between slots is tokenized piecewise."""
    ids, positions = [], []
    pieces = text.split(SOFT_SLOT)
    for i, piece in enumerate(pieces):
        ids += tokenizer(piece, add_special_tokens=False).input_ids if piece else []
        if i < len(pieces) - 1:
            positions.append(len(ids))
            ids.append(placeholder_id)
    return ids, positions


def left_pad(prompts: Sequence[Prompt], pad_id: int):
    """(ids [B, T], attention mask [B, T], soft {row: {position: vector}}): every prompt ends at
    the last column, so the next token of every row is predicted at the same position."""
    import torch

    length = max(len(p.ids) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    soft = {}
    for row, p in enumerate(prompts):
        offset = length - len(p.ids)
        ids[row, offset:] = torch.as_tensor(p.ids)
        mask[row, offset:] = 1
        if p.soft:
            soft[row] = {offset + position: vector for position, vector in p.soft.items()}
    return ids, mask, soft


# Domain-neutral defaults; a grid config words the prompt for its data (benchmarks/*.yaml: movies).
DEFAULT_SYSTEM = "You are a recommender. Answer with the title of one item."
DEFAULT_USER = (
    "A user interacted with these items, oldest first:\n{history}\nWhich item will "
    "they choose next?"
)


@dataclass(frozen=True)
class PromptTemplate:
    user: str = DEFAULT_USER
    system: str | None = DEFAULT_SYSTEM
    # one history line; {title} is the item identifier, {index} its position (1-based)
    line: str = "{title}"
    answer_prefix: str = ""  # text the answer starts with, after the assistant turn opens

    def __post_init__(self) -> None:
        if "{history}" not in self.user:
            raise ValueError(
                "prompt template: the user message must contain the {history} slot, got "
                f"{self.user!r}"
            )
        if "{title}" not in self.line:
            raise ValueError(
                f"prompt template: the history line must contain {{title}}, got {self.line!r}"
            )

    def as_dict(self) -> dict:
        return asdict(self)


def render_prompt(
    template: PromptTemplate, history_titles: Sequence[str], tokenizer=None, request: str = ""
) -> str:
    """The full prompt text; the item identifier is appended right after it. `request`: a
    sentence that ends the user message (a steered row's request), on its own line."""
    lines = "\n".join(
        template.line.format(title=t, index=i + 1) for i, t in enumerate(history_titles)
    )
    user = template.user.format(history=lines) + (f"\n{request}" if request else "")
    messages = ([{"role": "system", "content": template.system}] if template.system else []) + [
        {"role": "user", "content": user}
    ]
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n\n".join(m["content"] for m in messages) + "\n\nNext:"
    return text + template.answer_prefix

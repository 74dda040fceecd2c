"""Prompt wording, one shape for every LLM row (kept in the grid config, logged with the run).

A `PromptTemplate` is a user message with a `{history}` slot, one line per history item (oldest
first), an optional system message and the text the answer starts with. In a history line,
`{title}` is the item's "Title (Year)" and `{item}` the paradigm's own identifier of it (a soft
token, an item token, a semantic-ID code tuple). Text-prompted rows render the whole prompt as
text: for instruct models through the chat template, ending with the assistant prefix, so the item
identifier follows the prompt directly; for plain LMs the messages are joined as text. Rows that
write their own tokens (E4SRec, IDIOMoE, SID-LLM, RTA's frozen LLM) have no chat turns: they
tokenize the text before the history (`head`), each line around its item and the text after the
history (`tail`: the user message's rest, then the answer prefix), each piece on its own, and
each says which line slots it takes (`check`).
"""

from __future__ import annotations

import string
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


LINE_SLOTS = {"title", "item", "index"}  # what a history line may hold


def placeholders(text: str) -> list[str]:
    """The `{name}` slots of a prompt text, in order; a slot with a format spec or conversion, or
    a brace outside a slot (`{{`), is refused (rows without chat turns cut the text at its slots
    and never format it)."""
    names = []
    for literal, name, spec, conversion in string.Formatter().parse(text):
        if "{" in literal or "}" in literal or spec or conversion:
            raise ValueError(
                f"prompt template: {text!r} has a brace that is not a plain slot such as "
                "{history} (no format specs, conversions or escaped braces)"
            )
        if name is not None:
            names.append(name)
    return names


@dataclass(frozen=True)
class PromptTemplate:
    user: str = DEFAULT_USER
    system: str | None = DEFAULT_SYSTEM
    # one history line: {title} the item's "Title (Year)", {item} the paradigm's identifier of it,
    # {index} its position (1-based)
    line: str = "{title}"
    answer_prefix: str = ""  # text the answer starts with, after the assistant turn opens

    def __post_init__(self) -> None:
        if placeholders(self.user) != ["history"]:
            raise ValueError(
                "prompt template: the user message must contain the {history} slot once (and no "
                f"other slot), got {self.user!r}"
            )
        slots = placeholders(self.line)
        if not {"title", "item"} & set(slots) or not set(slots) <= LINE_SLOTS:
            raise ValueError(
                "prompt template: the history line must contain {title} or {item} (slots: "
                f"{', '.join(sorted(LINE_SLOTS))}), got {self.line!r}"
            )

    def as_dict(self) -> dict:
        return asdict(self)

    def check(
        self, slots: tuple[str, ...], chat: bool = True, bare: bool = False, tail: bool = True
    ) -> None:
        """Refuse a template its row cannot write: a history line with a slot the row does not
        fill (`slots`: those it fills; the first must appear once), text around it where the
        row's items follow each other directly (`bare`), a system message where the row has
        no chat turns (`chat` False), or text after the history where the row reads the history's
        last position (`tail` False)."""
        found = placeholders(self.line)
        if found.count(slots[0]) != 1 or not set(found) <= set(slots):
            raise ValueError(
                f"prompt.line must hold {{{slots[0]}}} once and no slot but "
                f"{', '.join('{' + s + '}' for s in slots)}, got {self.line!r}"
            )
        if bare and self.line != "{" + slots[0] + "}":
            raise ValueError(
                f"prompt.line must be '{{{slots[0]}}}' alone (the row's item tokens follow each "
                f"other), got {self.line!r}"
            )
        if not chat and self.system is not None:
            raise ValueError(
                "prompt.system must be null (this row's prompt has no chat turns), got "
                f"{self.system!r}"
            )
        if not tail and self.around_history()[1]:
            raise ValueError(
                "prompt: the user message must end with {history} and answer_prefix be empty "
                "(the row reads the history's last position), got "
                f"{self.user!r} and {self.answer_prefix!r}"
            )

    def around_history(self) -> tuple[str, str]:
        """(head, tail): the text before the history, and after it (the user message's rest, then
        the answer prefix), for a row without chat turns."""
        head, tail = self.user.split("{history}")
        return head, tail + self.answer_prefix

    def around(self, slot: str) -> tuple[str, str]:
        """(before, after): the history line's text around its `{slot}` (`before` may hold
        {title})."""
        before, after = self.line.split("{" + slot + "}")
        return before, after


def plain_prompt(user: str, line: str = "{item}", answer_prefix: str = "") -> Any:
    """A config field whose default is a prompt without chat turns (no system message), for a row
    that writes its own tokens."""
    return field(default_factory=lambda: PromptTemplate(user, None, line, answer_prefix))


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

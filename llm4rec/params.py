"""A model's `params` (a mapping from a grid config) -> its frozen config dataclass.

One parser for every model: nested dataclasses are built from nested mappings, `None` is kept
where a field allows it (e.g. `lora: null` = full fine-tuning), and an unknown key is an error
that names the model, the key path and the known keys, so a typo such as `beam_widht` fails
when the grid is validated, before any job runs; a key that moved names its new place.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any


class ParamsError(ValueError):
    """A model's params do not fit its config class; the message names the key."""


# Keys that moved (old path -> new path, the same for every model). A grid that still writes the
# old path is refused with the new one named; a run record written before the move is read with
# the key at its new place (`moved_to_today`).
MOVED = {
    # one place for every paradigm: text_prompted and cf_llara had it under sft, the rest at the top
    "sft.max_history": "max_history",
}

# Prompt wording that was a row's own keys and is now part of its one `prompt` mapping
# (llm4rec.llm.prompts.PromptTemplate): a grid that still writes one is told where it went.
REWORDED = {
    "instruction": "prompt.user, the text before {history}",
    "header": "prompt.user, the text before {history}",
    "response": "prompt.answer_prefix",
    "answer_prefix": "prompt.answer_prefix",
    "separator": "prompt.line, the text after {title}",
    "interleave_titles": "prompt.line: '{title} {item}\\n'",
}


def moved_to_today(params: dict[str, Any]) -> dict[str, Any]:
    """A run record's params (run.json) with every MOVED key at its new place; a record that holds
    both wrote the old one unused (its model read the new place), so that one is dropped."""
    params = copy.deepcopy(params)
    for old, new in MOVED.items():
        *parents, key = old.split(".")
        holder = params
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or key not in holder:
            continue
        value = holder.pop(key)
        *new_parents, new_key = new.split(".")
        target = params
        for part in new_parents:
            target = target.setdefault(part, {})
        target.setdefault(new_key, value)
    return params


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass a field holds (`X`, `X | None`, `Optional[X]`), or None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _field_default(cls: type, name: str) -> Any:
    """The default a field of `cls` takes when its key is not given (its factory's value)."""
    found = next(f for f in dataclasses.fields(cls) if f.name == name)
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return None if found.default is dataclasses.MISSING else found.default


def _allows_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(annotation)


def from_params(
    cls: type, params: dict[str, Any] | None, model: str, prefix: str = "", base: Any = None
) -> Any:
    """Build `cls` from `params`, naming the first unknown key as
    `model: unknown parameter 'a.b'`. A nested mapping fills in the field's own default, so a
    grid that gives `prompt: {user: ...}` keeps the rest of the row's prompt (not the nested
    class's defaults); `base` is the instance the given keys replace (None: the class defaults)."""
    params = params or {}
    if not isinstance(params, dict):
        raise ParamsError(
            f"{model}: parameter '{prefix.rstrip('.') or 'params'}' must be a mapping, "
            f"got {params!r}"
        )
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, value in params.items():
        if key not in known and f"{prefix}{key}" in MOVED:
            new = MOVED[prefix + key]
            raise ParamsError(
                f"{model}: parameter '{prefix}{key}' moved to '{new}': give params.{new}: "
                f"{value!r} instead"
            )
        if key not in known and key in REWORDED and "prompt" in known:
            raise ParamsError(
                f"{model}: parameter '{prefix}{key}' is now {REWORDED[key]} (one mapping words "
                "every LLM row's prompt: prompt: {user, system, line, answer_prefix})"
            )
        if key not in known:
            raise ParamsError(
                f"{model}: unknown parameter '{prefix}{key}' (known: {', '.join(sorted(known))})"
            )
        nested = _dataclass_of(hints[key])
        if nested is not None and not isinstance(value, (dict, nested)):
            if value is not None or not _allows_none(hints[key]):
                raise ParamsError(
                    f"{model}: parameter '{prefix}{key}' must be a mapping of "
                    f"{nested.__name__}'s settings, got {value!r}"
                )
        if nested is not None and isinstance(value, dict):
            default = getattr(base, key) if base is not None else _field_default(cls, key)
            inner = default if isinstance(default, nested) else None
            value = from_params(nested, value, model, f"{prefix}{key}.", inner)
        values[key] = value
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError) as err:
        raise ParamsError(f"{model}: {prefix.rstrip('.') or 'params'}: {err}") from err

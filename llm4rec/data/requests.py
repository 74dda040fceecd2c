"""Natural-language requests derived from an item's metadata, never from its title.

AlphaRec's user intentions (Sheng et al., ICLR 2025, Table 5) are short texts that say what the
user is after; here each one is written from the target item's attributes in a fixed template
(e.g. "a comedy or a drama from the 1990s"), so a model that reads it is told the kind of item,
never which one. `target_requests` builds one per evaluated user from the phase's target;
`matches` is the set of catalogue items that satisfy a request's attributes (its constraint set).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from llm4rec.data.split import Split

PLACEHOLDERS = ("genres", "decade")


@dataclass(frozen=True)
class RequestTemplate:
    """A request's wording: `{genres}` (the item's genres, lower case, joined by " or ") and
    `{decade}` (e.g. "1990s" from `year`); the fields the attributes are read from."""

    template: str = "something from the {decade}: {genres}"
    genres_field: str = "genres"
    year_field: str = "year"

    def __post_init__(self) -> None:
        used = set(re.findall(r"{(\w+)}", self.template))
        unknown = sorted(used - set(PLACEHOLDERS))
        if unknown or not used:
            raise ValueError(
                f"request template '{self.template}': placeholders must be among "
                f"{{{'}, {'.join(PLACEHOLDERS)}}} and at least one is needed"
                + (f" (unknown: {unknown[0]})" if unknown else "")
            )

    @property
    def placeholders(self) -> set[str]:
        return set(re.findall(r"{(\w+)}", self.template))


@dataclass(frozen=True)
class RequestTraining:
    """Training with requests (NEO's instruction mixing): a seeded `share` of the training windows
    carry their target's request (`request`, worded by `line`) in the prompt, the rest none."""

    request: RequestTemplate = field(default_factory=RequestTemplate)
    share: float = 0.5
    line: str = "The user asks for {request}."

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"train_requests.share must be in (0, 1], got {self.share}")
        if "{request}" not in self.line:
            raise ValueError(f"train_requests.line must contain {{request}}, got {self.line!r}")


def genre_list(value: object) -> list[str]:
    """An item's genres: '|', ',' or ';'-separated; else whitespace-separated words (MovieLens-100K
    writes "Animation Children's Comedy"). Lower case, in their order, each once."""
    text = "" if value is None else str(value)
    parts = re.split(r"[|,;]", text) if re.search(r"[|,;]", text) else text.split()
    return list(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))


def genre_sets(items: pd.DataFrame, field_name: str = "genres") -> list[set[str]]:
    """Each catalogue item's genres as a set (empty where the field is missing)."""
    values = items[field_name] if field_name in items else [""] * len(items)
    return [set(genre_list(v)) for v in values]


def decade(year: object) -> str:
    """'1995' -> '1990s'; '' when the year is missing or not a number."""
    match = re.match(r"\s*(\d{4})", "" if year is None else str(year))
    return f"{int(match.group(1)) // 10 * 10}s" if match else ""


def request_text(item: pd.Series, template: RequestTemplate) -> str:
    """The request an item implies, or '' when one of the template's attributes is missing."""
    if template.genres_field not in item.index or template.year_field not in item.index:
        missing = (
            template.genres_field
            if template.genres_field not in item.index
            else template.year_field
        )
        raise ValueError(
            f"items.parquet has no field '{missing}' (request template '{template.template}')"
        )
    values = {
        "genres": " or ".join(genre_list(item[template.genres_field])),
        "decade": decade(item[template.year_field]),
    }
    if any(not values[name] for name in template.placeholders):
        return ""
    return template.template.format(**values)


def target_requests(
    split: Split, phase: str, users: Sequence[str], template: RequestTemplate
) -> dict[str, str]:
    """{user: request} from each user's `phase` target (the one item leave-one-out holds out; the
    first target otherwise); users whose target lacks an attribute get ''."""
    targets = split.targets(phase)
    items = split.items.set_index("item_id", drop=False)
    return {
        user: request_text(items.loc[targets[user][0]], template) if targets.get(user) else ""
        for user in users
    }


def matches(items: pd.DataFrame, request_item: pd.Series, template: RequestTemplate) -> list[bool]:
    """Per catalogue item: does it satisfy the attributes `request_item`'s request names (shares a
    genre with it where `{genres}` is used; same decade where `{decade}` is)?"""
    wanted_genres = set(genre_list(request_item[template.genres_field]))
    wanted_decade = decade(request_item[template.year_field])
    out = []
    for _, item in items.iterrows():
        ok = True
        if "genres" in template.placeholders:
            ok &= bool(wanted_genres & set(genre_list(item[template.genres_field])))
        if "decade" in template.placeholders:
            ok &= decade(item[template.year_field]) == wanted_decade
        out.append(ok)
    return out

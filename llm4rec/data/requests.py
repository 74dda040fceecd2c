"""Natural-language requests, each written from item attributes (genres, decade), never a title.

AlphaRec's user intentions (Sheng et al., ICLR 2025, Table 5) are short texts that say what the
user is after. A request here is a set of attributes (`Request`: genres, any of which will do, and a
decade) worded by a template (e.g. "something from the {decade}: {genres}"); its constraint set
C(request) is the catalogue items that satisfy it (`constraint_matrix` in
llm4rec.evaluation.steerability). Two kinds per user:

- oracle (`item_request`, `target_requests`): the attributes of the user's held-out target. The
  target always satisfies it and C can be small (19.5% of ml-100k's test users have |C| <= 50), so
  a model that reads it is nearly told the answer: an upper bound on what a request can add, never
  an accuracy result.
- counterfactual (`counterfactual_request`, NEO's sense of steerability: control of the list by an
  instruction that does not come from the target): one genre and/or decade drawn, seeded per user
  and wording, from the catalogue's distribution of that attribute over items, excluding every
  attribute the target has, so the target never satisfies it.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
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
    # which positions of a window that carries a request are supervised: `described`, the one
    # the request describes (the window's target); `every` item position, as a window without one
    # (the first version: most supervised targets then carried an unrelated request)
    supervise: str = "described"

    def __post_init__(self) -> None:
        if self.supervise not in ("described", "every"):
            raise ValueError(
                f"train_requests.supervise must be described or every, got {self.supervise!r}"
            )
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


@dataclass(frozen=True)
class Request:
    """What a request asks for: any of `genres` (lower case) and/or `decade` ("1990s"); the
    attributes a template does not name are ignored."""

    genres: tuple[str, ...] = ()
    decade: str = ""

    def wording(self, template: RequestTemplate) -> str:
        """The request in words ('' when one of the template's attributes is missing)."""
        values = {"genres": " or ".join(self.genres), "decade": self.decade}
        if any(not values[name] for name in template.placeholders):
            return ""
        return template.template.format(**values)


def _check_fields(columns, template: RequestTemplate) -> None:
    for name in (template.genres_field, template.year_field):
        if name not in columns:
            raise ValueError(
                f"items.parquet has no field '{name}' (request template '{template.template}')"
            )


def item_request(item: pd.Series, template: RequestTemplate) -> Request:
    """The request an item implies (its genres, its decade): the oracle request of a user whose
    target it is."""
    _check_fields(item.index, template)
    return Request(
        tuple(genre_list(item[template.genres_field])), decade(item[template.year_field])
    )


def request_text(item: pd.Series, template: RequestTemplate) -> str:
    """The request an item implies, worded, or '' when one of the template's attributes is
    missing."""
    return item_request(item, template).wording(template)


def target_requests(
    split: Split, phase: str, users: Sequence[str], template: RequestTemplate
) -> dict[str, str]:
    """{user: oracle request in words} from each user's `phase` target (the one item
    leave-one-out holds out; the first target otherwise); '' where the target lacks an
    attribute."""
    return worded(phase_requests(split, phase, users, template, "oracle"), template)


@dataclass(frozen=True)
class AttributeDistribution:
    """The catalogue's distribution of the attributes a template names: each value (a genre, a
    decade, or a (genre, decade) pair) with its count of catalogue items, in a fixed order."""

    values: tuple[tuple[str, str], ...]  # (genre or "", decade or "")
    counts: np.ndarray

    @classmethod
    def of(cls, items: pd.DataFrame, template: RequestTemplate) -> AttributeDistribution:
        _check_fields(items.columns, template)
        wants = template.placeholders
        found: Counter = Counter()
        for genres, year in zip(
            items[template.genres_field], items[template.year_field], strict=True
        ):
            genre_values = genre_list(genres) if "genres" in wants else [""]
            item_decade = decade(year) if "decade" in wants else ""
            if "decade" in wants and not item_decade:
                continue
            for genre in genre_values:
                found[(genre, item_decade)] += 1
        values = tuple(sorted(found))
        return cls(values, np.array([found[v] for v in values], dtype=np.float64))


def counterfactual_request(
    target: Request,
    distribution: AttributeDistribution,
    template: RequestTemplate,
    user: str,
    seed: int = 0,
) -> Request | None:
    """A request the target does not satisfy: a value of `distribution` drawn with probability
    proportional to its catalogue count among the values that share no attribute with the target
    (no genre of the target's, not its decade). Seeded by (seed, the template's wording, user), so
    the runner (ranking with it) and the evaluator (scoring against it) draw the same one. None
    when the target lacks an attribute the template names (no oracle request either) or no value is
    left."""
    wants = template.placeholders
    if ("genres" in wants and not target.genres) or ("decade" in wants and not target.decade):
        return None
    excluded = set(target.genres)
    keep = np.array(
        [
            (genre not in excluded or "genres" not in wants)
            and (item_decade != target.decade or "decade" not in wants)
            for genre, item_decade in distribution.values
        ]
    )
    if not keep.any():
        return None
    weights = distribution.counts * keep
    key = zlib.crc32(f"{template.template}|{user}".encode())
    pick = np.random.default_rng([seed, key]).choice(len(weights), p=weights / weights.sum())
    genre, item_decade = distribution.values[pick]
    return Request((genre,) if genre else (), item_decade)


def phase_requests(
    split: Split,
    phase: str,
    users: Sequence[str],
    template: RequestTemplate,
    kind: str = "oracle",
    seed: int = 0,
) -> dict[str, Request | None]:
    """{user: Request} of one kind ("oracle" or "counterfactual", module doc) from each user's
    `phase` target; None where none can be written."""
    targets = split.targets(phase)
    items = split.items.set_index(split.items["item_id"].astype(str), drop=False)
    distribution = AttributeDistribution.of(split.items, template) if kind != "oracle" else None
    out: dict[str, Request | None] = {}
    for user in users:
        if not targets.get(user):
            out[user] = None
            continue
        oracle = item_request(items.loc[str(targets[user][0])], template)
        if kind == "oracle":
            out[user] = oracle if oracle.wording(template) else None
        elif kind == "counterfactual":
            out[user] = counterfactual_request(oracle, distribution, template, user, seed)
        else:
            raise ValueError(f"request kind '{kind}' is not one of: {', '.join(REQUEST_KINDS)}")
    return out


REQUEST_KINDS = ("oracle", "counterfactual")


def worded(requests: Mapping[str, Request | None], template: RequestTemplate) -> dict[str, str]:
    """{user: the request in words} ('' where there is none)."""
    return {u: r.wording(template) if r is not None else "" for u, r in requests.items()}


def matches(items: pd.DataFrame, request_item: pd.Series, template: RequestTemplate) -> list[bool]:
    """Per catalogue item: does it satisfy the attributes `request_item`'s request names (shares a
    genre with it where `{genres}` is used; same decade where `{decade}` is)? The per-item
    reference `constraint_matrix` is tested against."""
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

"""Item identifiers for text-prompted models: "Title (Year)", unique across the catalogue.

ml-100k has duplicate titles and release years such as 'unknown' that are not years; an
identifier uses the year only when it is four digits, and colliding identifiers get a
deterministic suffix " [2]", " [3]", ... in catalogue order (items.parquet order).
"""

from __future__ import annotations

import re

import pandas as pd

from llm4rec.data.atomic import DataError

YEAR = re.compile(r"^\d{4}$")


def item_text(title: str, year: str) -> str:
    title, year = str(title).strip(), str(year).strip()
    return f"{title} ({year})" if YEAR.match(year) else title


def item_identifiers(items: pd.DataFrame) -> tuple[dict[str, str], int]:
    """({item_id: unique identifier}, number of items whose identifier collided)."""
    empty = items[items["title"].astype(str).str.strip() == ""]
    if len(empty):
        raise DataError(
            f"items.parquet: item '{empty['item_id'].iloc[0]}' has an empty title ({len(empty)} "
            "items without a title, e.g. interacted items missing from the dataset's item file); "
            "paradigms that write items as text need a title for every catalogue item"
        )
    seen: dict[str, int] = {}
    out: dict[str, str] = {}
    collisions = 0
    for item_id, title, year in items[["item_id", "title", "year"]].itertuples(index=False):
        text = item_text(title, year)
        seen[text] = seen.get(text, 0) + 1
        if seen[text] > 1:
            collisions += 1
            text = f"{text} [{seen[text]}]"
        out[str(item_id)] = text
    return out, collisions

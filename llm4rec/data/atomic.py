"""Reader and writer for RecBole atomic files (`.inter`, `.item`, `.user`).

An atomic file is tab-separated with a typed header, e.g. ``user_id:token\titem_id:token``.
Types are ``token``, ``token_seq``, ``float`` and ``float_seq``. Tokens are kept as strings
(ids are labels, never numbers); floats are parsed and must be numeric.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.io import write_with

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


class DataError(ValueError):
    """Bad input data: the message names the file and field and what was expected."""


def read_header(path: Path) -> dict[str, str]:
    """Return {field: type} from an atomic file's header line."""
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n\r")
    if not header:
        raise DataError(f"{path}: empty file, expected a header line like 'user_id:token\\t...'")
    columns = header.split("\t")
    if len(columns) == 1:
        for delimiter, label in ((",", "comma"), (";", "semicolon"), (" ", "space"), ("|", "pipe")):
            if delimiter in header and header.count(":") > 1:
                raise DataError(
                    f"{path}: the header '{header[:80]}' is {label}-separated; atomic files "
                    "separate fields with a tab (e.g. "
                    "'user_id:token<TAB>item_id:token<TAB>timestamp:float')"
                )
    fields: dict[str, str] = {}
    for column in columns:
        name, sep, ftype = column.partition(":")
        if not sep or ftype not in ATOMIC_TYPES:
            raise DataError(
                f"{path}: header column '{column}' is not 'name:type' with type in {ATOMIC_TYPES}"
            )
        fields[name] = ftype
    return fields


def read_atomic(path: str | Path, required: dict[str, str] | None = None) -> pd.DataFrame:
    """Read an atomic file into a DataFrame with bare field names.

    `required` maps field -> expected type; a missing field, a wrong type, or a non-numeric
    value in a float field raises `DataError` naming the file and field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    fields = read_header(path)
    for name, ftype in (required or {}).items():
        if name not in fields:
            raise DataError(
                f"{path}: missing field '{name}:{ftype}' (found: "
                f"{', '.join(f'{k}:{v}' for k, v in fields.items())})"
            )
        if ftype == "float" and fields[name] != "float":
            raise DataError(
                f"{path}: field '{name}' must be of type float, header says '{fields[name]}'"
            )
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            header=0,
            names=list(fields),
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            encoding="utf-8",
        )
    except pd.errors.ParserError as err:  # e.g. "Expected 3 fields in line 7, saw 4"
        raise DataError(
            f"{path}: a data line does not have the header's {len(fields)} tab-separated fields "
            f"({err})"
        ) from None
    for name, ftype in fields.items():
        if ftype == "float":
            values = pd.to_numeric(df[name].replace("", None), errors="coerce")
            bad = (values.isna() | ~np.isfinite(values.fillna(0))) & (df[name] != "")
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise DataError(
                    f"{path}: field '{name}' must be numeric (a finite number), got "
                    f"{df[name].iloc[row]!r} on data line {row + 1}"
                )
            df[name] = values
    return df


def write_atomic(df: pd.DataFrame, path: str | Path, types: dict[str, str]) -> Path:
    """Write `df[list(types)]` as an atomic file (atomically: temp file, then rename)."""
    header = "\t".join(f"{name}:{ftype}" for name, ftype in types.items())

    def _write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(header + "\n")
            df[list(types)].to_csv(
                fh, sep="\t", header=False, index=False, quoting=csv.QUOTE_NONE, escapechar="\\"
            )

    return write_with(path, _write)

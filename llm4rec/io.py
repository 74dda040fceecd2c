"""Atomic file writing: every file a stage writes appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


class WriteError(OSError):
    """A stage could not write a file (full disk, unwritable folder); none is left half-written."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds. A failed
    write (ENOSPC, EFBIG, EACCES, ...) raises WriteError naming `path`; its temp file is removed."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        reason = err.strerror or str(err)
        raise WriteError(
            err.errno,
            f"cannot write {path}: {reason} (nothing was written there; free space or "
            f"fix the folder's permissions, then rerun)",
            str(path),
        ) from err
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call `writer(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_with(
        path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    )


def write_text(path: str | Path, text: str) -> Path:
    return write_with(path, lambda p: p.write_text(text))


def write_parquet(path: str | Path, df: pd.DataFrame) -> Path:
    return write_with(path, lambda p: df.to_parquet(p, index=False))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any) -> str:
    """A short, order-independent hash of a JSON-able object (used as the config hash)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def sequence_hash(items: Iterable[Any]) -> str:
    """A short hash of a long sequence (millions of training examples), fed to sha256 one element
    at a time: no JSON blob of the whole sequence is ever built. Lists and tuples are walked with
    their lengths (so boundaries count), numpy arrays hashed as their little-endian int64 / float64
    bytes with their shape, anything else as its JSON."""
    digest = hashlib.sha256()
    for item in items:
        _feed(digest, item)
    return digest.hexdigest()[:12]


def _feed(digest, obj: Any) -> None:
    import numpy as np

    if isinstance(obj, (list, tuple)):
        digest.update(f"[{len(obj)}".encode())
        for element in obj:
            _feed(digest, element)
    elif isinstance(obj, np.ndarray):
        wide = obj.astype("<i8" if obj.dtype.kind in "iub" else "<f8", copy=False)
        digest.update(f"a{obj.shape}".encode())
        digest.update(np.ascontiguousarray(wide).tobytes())
    else:
        digest.update(json.dumps(obj, sort_keys=True, default=str).encode())


def write_npy(path: str | Path, array: Any) -> Path:
    import numpy as np

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file handle: np.save would append ".npy" to the temp name
            np.save(fh, array)

    return write_with(path, _write)

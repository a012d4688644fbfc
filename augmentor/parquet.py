"""Reading Parquet shards and manifests with errors that name the file and say how to recover.

pyarrow's own messages ("Parquet magic bytes not found in footer") often name no file; among thousands of shards
a user cannot tell which one a crash truncated. Every reader of shards and manifests goes through here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from augmentor.errors import InputError

REDO_PREPROCESS = "delete it and rerun `augmentor preprocess` with the same --out: that redoes just its rows"
REDO_RUN = "delete it and rerun `augmentor run` with the same --out: that redoes just its rows"
REDO_PACK = "rerun `augmentor pack` to write it again"
REPLACE = "replace it with an intact copy"


class CorruptFileError(InputError):
    """A Parquet file that cannot be read (truncated, or not Parquet at all)."""


def _corrupt(path: str | os.PathLike[str], exc: Exception, recovery: str) -> CorruptFileError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CorruptFileError(f"{path} cannot be read ({detail}); {recovery}")


def read_table(path: str | os.PathLike[str], columns: Sequence[str] | None = None, recovery: str = REPLACE) -> pa.Table:
    """``pq.read_table``, raising :class:`CorruptFileError` that names ``path`` and ``recovery``."""
    try:
        return pq.read_table(path, columns=None if columns is None else list(columns))
    except (pa.ArrowInvalid, OSError) as exc:
        raise _corrupt(path, exc, recovery) from exc


def read_schema(path: str | os.PathLike[str], recovery: str = REPLACE) -> pa.Schema:
    """``pq.read_schema``, raising :class:`CorruptFileError` that names ``path`` and ``recovery``."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _corrupt(path, exc, recovery) from exc


def open_file(path: str | os.PathLike[str], recovery: str = REPLACE) -> pq.ParquetFile:
    """``pq.ParquetFile`` (for reading in batches), raising :class:`CorruptFileError` that names ``path``."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _corrupt(path, exc, recovery) from exc


def check_files(paths: Sequence[str | os.PathLike[str]], recovery: str = REPLACE) -> None:
    """Read the footer of every file (cheap); raise :class:`CorruptFileError` for the first that has none."""
    for path in paths:
        try:
            pq.read_metadata(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _corrupt(path, exc, recovery) from exc


def scan(
    paths: Sequence[Path],
    schema: pa.Schema,
    columns: list[str] | None = None,
    recovery: Sequence[str] | str = REPLACE,
) -> pa.Table:
    """Read many files in one dataset scan (in order, on threads); a corrupt one is named.

    Args:
        paths: The files.
        schema: Their common schema.
        columns: Columns to read (all by default).
        recovery: One recovery hint for all files, or one per file.
    """
    try:
        return pads.dataset([str(p) for p in paths], schema=schema, format="parquet").to_table(columns=columns)
    except (pa.ArrowInvalid, OSError):
        hints = [recovery] * len(paths) if isinstance(recovery, str) else list(recovery)
        for path, hint in zip(paths, hints, strict=True):
            check_files([path], hint)
        raise  # not a corrupt footer: let the original error through

"""The inputs of ``augmentor export-dataset``, read as streams: preprocess folders and packs (the real aligned crops)
and ``augmentor run`` folders (the hallucinated copies).

The run manifest is read by its column names with pyarrow (the schema and file names are
``augmentor/manifest.py``'s): ``image_id, identity, copy, source_path, output_path, status`` and, where the run used
donors, ``donor_image_id, donor_identity``. A run folder holds ``manifest.parquet`` and, while a run is going or
after a crash, ``manifest/part-*.parquet``; both are read and each ``(image_id, copy)`` is kept once, the first seen,
as ``augmentor.manifest.read_manifest`` does. Only ``ok`` rows are exported. Files are read in record batches, so
memory does not grow with the dataset (beyond the run keys kept to drop repeats).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from augmentor.errors import InputError
from augmentor.manifest import MANIFEST_FILE as RUN_MANIFEST
from augmentor.manifest import PARTS_DIR as RUN_PARTS
from augmentor.parquet import open_file, read_schema
from augmentor.preprocessing.shards import PACK_FILE, SHARD_GLOB

REAL, COPY = "real", "copy"
RUN_COLUMNS = ("image_id", "identity", "copy", "source_path", "output_path", "status")
DONOR_COLUMNS = ("donor_image_id", "donor_identity")  # runs with --method donor
REAL_COLUMNS = ("image_id", "identity", "aligned")  # + source_path and status in preprocess shards
BATCH_ROWS = 256  # rows per record batch read


class SourceError(InputError):
    """A SOURCE that is not a preprocess folder, a pack or a run folder, or one whose files are missing."""


@dataclass
class Sample:
    """One exported image and where it came from."""

    identity: str
    kind: str  # real (an aligned crop) or copy (a hallucinated copy)
    image_id: str  # the source image's id in its dataset
    source_path: str  # the source image file
    copy: int | None  # which copy of the source image; None for a real crop
    donor_image_id: str | None  # the donor whose context the copy wears (--method donor runs), else None
    donor_identity: str | None
    origin: int  # index of the SOURCE argument it came from
    encoded: bytes | None = None  # the stored crop (PNG/WebP/JPEG) of a real row
    path: str | None = None  # the image file of a copy

    def metadata(self) -> dict:
        """The provenance fields, as written next to every sample."""
        return {
            "identity": self.identity,
            "kind": self.kind,
            "image_id": self.image_id,
            "source_path": self.source_path,
            "copy": self.copy,
            "donor_image_id": self.donor_image_id,
            "donor_identity": self.donor_identity,
            "origin": self.origin,
        }


@dataclass
class Source:
    """One SOURCE argument: its Parquet files and how to read them."""

    path: Path
    kind: str  # real or copy
    files: list[Path]
    base: Path  # the folder a copy's relative output_path starts from
    columns: list[str] = field(default_factory=list)  # the columns read in the second pass
    index: int = 0


def _real(path: Path, files: list[Path], index: int) -> Source:
    names = set(read_schema(files[0]).names)
    if not set(REAL_COLUMNS) <= names:
        raise SourceError(f"{files[0]} has no {', '.join(REAL_COLUMNS)} columns: not a preprocess shard or pack")
    columns = [*REAL_COLUMNS, *(c for c in ("source_path", "status") if c in names)]
    return Source(path, REAL, files, path, columns, index)


def _run(path: Path, files: list[Path], base: Path, index: int) -> Source:
    names = set(read_schema(files[0]).names)
    if not set(RUN_COLUMNS) <= names:
        raise SourceError(f"{files[0]} has no {', '.join(RUN_COLUMNS)} columns: not an `augmentor run` manifest")
    columns = [*RUN_COLUMNS, *(c for c in DONOR_COLUMNS if c in names)]
    return Source(path, COPY, files, base, columns, index)


def open_source(path: str | Path, index: int = 0) -> Source:
    """Recognise ``path``: a preprocess output folder (``part-*.parquet``), a pack (``faces.parquet``), an
    ``augmentor run`` folder (``manifest.parquet`` / ``manifest/part-*.parquet``) or one such Parquet file.

    Raises:
        SourceError: none of these.
    """
    path = Path(path)
    if path.is_file():
        names = set(read_schema(path).names)
        if "output_path" in names:
            return _run(path, [path], path.parent.parent if path.parent.name == RUN_PARTS else path.parent, index)
        return _real(path, [path], index)
    if not path.is_dir():
        raise SourceError(f"{path} does not exist")
    run_files = [path / RUN_MANIFEST] if (path / RUN_MANIFEST).is_file() else []
    run_files += sorted((path / RUN_PARTS).glob(SHARD_GLOB))
    if run_files:
        return _run(path, run_files, path, index)
    if shards := sorted(path.glob(SHARD_GLOB)):
        return _real(path, shards, index)
    if (path / PACK_FILE).is_file():
        return _real(path, [path / PACK_FILE], index)
    raise SourceError(
        f"{path} is neither a preprocess folder ({SHARD_GLOB}), a pack ({PACK_FILE}) nor an `augmentor run` folder "
        f"({RUN_MANIFEST})"
    )


def _batches(source: Source, columns: list[str]) -> Iterator[dict[str, list]]:
    """Column lists of every record batch of the ok rows (each run key once)."""
    seen: set[tuple[str, int]] = set()
    for file in source.files:
        parquet = open_file(file)
        wanted = dict.fromkeys([*columns, "status", *(["copy"] if source.kind == COPY else [])])
        read = [c for c in wanted if c in parquet.schema_arrow.names]  # a pack has no status: all its rows are ok
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=read):
            rows = batch.to_pydict()
            n = batch.num_rows
            keep = [rows["status"][i] == "ok" for i in range(n)] if "status" in rows else [True] * n
            if source.kind == COPY:
                for i in range(n):
                    key = (rows["image_id"][i], rows["copy"][i])
                    keep[i] = keep[i] and key not in seen
                    seen.add(key)
            if any(keep):
                yield {name: [v for v, k in zip(values, keep, strict=True) if k] for name, values in rows.items()}


def count_identities(source: Source) -> Counter:
    """``identity -> ok rows`` of a source: the first, cheap pass (two string columns)."""
    counts: Counter = Counter()
    for rows in _batches(source, ["image_id", "identity"]):
        counts.update(rows["identity"])
    return counts


def iter_samples(source: Source) -> Iterator[Sample]:
    """Every ok row of ``source`` as a :class:`Sample`, in file order.

    Raises:
        SourceError: a copy's image file is missing.
    """
    for rows in _batches(source, source.columns):
        for i in range(len(rows["image_id"])):
            yield _sample(source, {name: values[i] for name, values in rows.items()})


def _sample(source: Source, row: dict) -> Sample:
    common = {"identity": str(row["identity"]), "image_id": str(row["image_id"]), "origin": source.index}
    source_path = str(row.get("source_path") or "")
    if source.kind == REAL:
        return Sample(
            kind=REAL,
            source_path=source_path,
            copy=None,
            donor_image_id=None,
            donor_identity=None,
            encoded=row["aligned"],
            **common,
        )
    output = row["output_path"]
    if not output:
        raise SourceError(f"{source.path}: ok row {row['image_id']} copy {row['copy']} has no output_path")
    path = Path(output) if Path(output).is_absolute() else source.base / output
    if not path.is_file():
        raise SourceError(f"{source.path}: the copy {path} is missing (was the run folder moved or pruned?)")
    return Sample(
        kind=COPY,
        source_path=source_path,
        copy=int(row["copy"]),
        donor_image_id=row.get("donor_image_id"),
        donor_identity=row.get("donor_identity"),
        path=str(path),
        **common,
    )

"""The manifest of ``augmentor run``: one row per input image and copy, in one pyarrow schema.

=============  ========  ===================================================================================
column         type      meaning
=============  ========  ===================================================================================
image_id       string    the dataset's image id (unique within the dataset)
identity       string    the identity, verbatim (file names use a sanitised form, see ``augmentor.datasets.paths``)
label          int32     index of ``identity`` in the sorted list of the dataset's identities (stable)
copy           int32     which hallucination of the image, 0 .. copies - 1
source_path    string    the input file
output_path    string    the hallucinated image, relative to the output folder; null unless status is ok
status         string    ``ok`` / ``no_face`` / ``error`` / ``missing`` (listed, but the file is not on disk)
reason         string    ``code: detail`` when status is not ok (see docs/preprocess.md), else ""
model_id       string    first 16 hex digits of the sha256 of the checkpoint's ``model.safetensors`` (or its shards);
                         ``--method donor``: the donor bank's id (:meth:`augmentor.donors.DonorBank.identify`)
seed           int64     seed of the image's noise inputs (only matters for checkpoints with noise channels)
mask_area      float32   share of the 128x128 aligned crop inside the face hull; null unless status is ok
match_score    float32   Pearson correlation of dlib-ResNet descriptors, hallucinated vs aligned original
donor_image_id string    ``--method donor``: image id of the face whose context was used; null for the cascade
donor_identity string    ``--method donor``: that donor's identity (never the target's); null for the cascade
=============  ========  ===================================================================================

The key is ``(image_id, copy)``. While a run is going, every written batch lands as ``manifest/part-*.parquet``;
at the end they are merged into ``manifest.parquet``, the file to read. :func:`read_manifest` merges whatever is
there (also after a crash), keeping each key once.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from augmentor.layout import MODEL_FILE
from augmentor.layout import SHARD_GLOB as WEIGHT_SHARDS
from augmentor.parquet import REDO_RUN, scan

MANIFEST_FILE = "manifest.parquet"
PARTS_DIR = "manifest"
PART_GLOB = "part-*.parquet"
MERGED_PREFIX = "part-merged-"  # a part made by merge_parts from many
KEY = ("image_id", "copy")


def _field(name: str, dtype: pa.DataType, description: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, dtype, nullable=nullable, metadata={"description": description})


MANIFEST_SCHEMA = pa.schema(
    [
        _field("image_id", pa.string(), "the dataset's image id"),
        _field("identity", pa.string(), "the identity, verbatim"),
        _field("label", pa.int32(), "index of identity in the sorted identities of the dataset"),
        _field("copy", pa.int32(), "hallucination index, 0 .. copies - 1"),
        _field("source_path", pa.string(), "input file"),
        _field("output_path", pa.string(), "output image relative to the output folder; null unless ok", True),
        _field("status", pa.string(), "ok / no_face / error / missing"),
        _field("reason", pa.string(), "'code: detail' unless ok, else ''"),
        _field("model_id", pa.string(), "sha256 of model.safetensors, first 16 hex digits"),
        _field("seed", pa.int64(), "seed of the noise inputs"),
        _field("mask_area", pa.float32(), "share of the aligned crop inside the face hull; null unless ok", True),
        _field("match_score", pa.float32(), "Pearson of face descriptors, output vs aligned; null unless ok", True),
        _field("donor_image_id", pa.string(), "method donor: image id of the context's donor; null otherwise", True),
        _field("donor_identity", pa.string(), "method donor: identity of the context's donor; null otherwise", True),
    ],
    metadata={"format": "augmentor-manifest", "version": "1"},
)


def identity_labels(identities: Iterable[str]) -> dict[str, int]:
    """``{identity: index in the sorted distinct identities}``: the same whatever subset a run processes."""
    return {identity: i for i, identity in enumerate(sorted(set(identities)))}


def model_id(checkpoint: str | os.PathLike[str]) -> str:
    """First 16 hex digits of the sha256 of a checkpoint folder's weights file (or of its shards, in name order).

    Raises:
        FileNotFoundError: no ``model.safetensors`` (nor ``model-*-of-*.safetensors`` shards) there.
    """
    weights = Path(checkpoint) / MODEL_FILE
    files = [weights] if weights.is_file() else sorted(Path(checkpoint).glob(WEIGHT_SHARDS))
    if not files:
        raise FileNotFoundError(f"{weights} not found: not an augmentor checkpoint folder")
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def write_atomic(table: pa.Table, path: Path) -> Path:
    """Write a Parquet file under a temporary name in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def part_name(image_ids: Sequence[str], copies: Sequence[int]) -> str:
    """A part's file name, derived from its keys: a retried batch overwrites its own part instead of adding one."""
    digest = hashlib.sha256()
    for key in sorted(zip(image_ids, copies, strict=True)):
        digest.update(f"{key[0]}\0{key[1]}\0".encode("utf-8", "surrogatepass"))
    return f"part-{digest.hexdigest()[:24]}.parquet"


def write_part(rows: dict[str, list], out_dir: str | os.PathLike[str]) -> Path:
    """Write one batch of manifest rows (column lists, :data:`MANIFEST_SCHEMA` order) as a part file, atomically.

    A nullable column left out (such as the donor columns of a cascade run) is null.
    """
    n = len(rows["image_id"])
    rows = {**{f.name: [None] * n for f in MANIFEST_SCHEMA if f.nullable}, **rows}
    table = pa.Table.from_pydict(rows, schema=MANIFEST_SCHEMA)
    return write_atomic(table, Path(out_dir) / PARTS_DIR / part_name(rows["image_id"], rows["copy"]))


def part_paths(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The completed part files of an output folder, in name order."""
    return sorted((Path(out_dir) / PARTS_DIR).glob(PART_GLOB))


def remove_temporary(out_dir: str | os.PathLike[str]) -> int:
    """Delete the temporary files a killed run left in the manifest folders; returns how many."""
    out_dir = Path(out_dir)
    stale = [*out_dir.glob(f".{MANIFEST_FILE}.*.tmp"), *(out_dir / PARTS_DIR).glob(".part-*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _unique_keys(table: pa.Table) -> pa.Table:
    """The first row of every ``(image_id, copy)``."""
    if table.num_rows == 0:
        return table
    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(list(KEY), use_threads=False).aggregate([("_row", "min")])
    return table.take(pc.sort_indices(first["_row_min"]))


def read_manifest(out_dir: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """Every manifest row of an output folder, each ``(image_id, copy)`` once, finished run or not.

    Args:
        out_dir: The ``--out`` folder of ``augmentor run``.
        columns: Columns to read (all by default); the key columns are always included.

    Raises:
        FileNotFoundError: no manifest there yet.
    """
    return _read(Path(out_dir), part_paths(out_dir), columns)


def _read(out_dir: Path, parts: list[Path], columns: list[str] | None = None) -> pa.Table:
    """``manifest.parquet`` (if any) and exactly ``parts``, each key once."""
    files = ([out_dir / MANIFEST_FILE] if (out_dir / MANIFEST_FILE).is_file() else []) + parts
    if not files:
        raise FileNotFoundError(f"no {MANIFEST_FILE} or {PARTS_DIR}/{PART_GLOB} in {out_dir}")
    wanted = None if columns is None else list(dict.fromkeys([*KEY, *columns]))
    schema = MANIFEST_SCHEMA if wanted is None else pa.schema([MANIFEST_SCHEMA.field(c) for c in wanted])
    # One dataset scan, files in order and read on threads: a crashed CASIA-size run leaves thousands of parts.
    table = scan(files, schema, wanted, [_recovery(f) for f in files])
    return _unique_keys(table)


def _recovery(path: Path) -> str:
    """What to do about a corrupt manifest file."""
    if path.name == MANIFEST_FILE:
        return "delete it and rerun `augmentor run` with the same --out: the rows it held are made again"
    return REDO_RUN


def done_keys(out_dir: str | os.PathLike[str]) -> pa.Table:
    """The ``(image_id, copy)`` pairs already in the manifest (an empty table for a fresh folder)."""
    try:
        return read_manifest(out_dir, columns=list(KEY))
    except FileNotFoundError:
        return pa.table({"image_id": pa.array([], pa.string()), "copy": pa.array([], pa.int32())})


def merge_parts(out_dir: str | os.PathLike[str]) -> Path | None:
    """Merge the part files written since the last merge into one part (atomically), then delete them.

    What a long run's driver does now and then, so that a crash leaves few files for the rerun to read. Merged parts
    (``part-merged-*``) are not merged again, so the total cost stays linear in the rows; :func:`consolidate` sorts
    everything into ``manifest.parquet`` at the end. Returns the merged part, or None when there was nothing to merge.
    """
    parts = [p for p in part_paths(out_dir) if not p.name.startswith(MERGED_PREFIX)]
    if len(parts) < 2:
        return None
    table = scan(parts, MANIFEST_SCHEMA, recovery=REDO_RUN)
    table = _unique_keys(table)
    name = MERGED_PREFIX + part_name(table["image_id"].to_pylist(), table["copy"].to_pylist()).removeprefix("part-")
    merged = write_atomic(table, Path(out_dir) / PARTS_DIR / name)
    for path in parts:
        path.unlink(missing_ok=True)
    return merged


def consolidate(out_dir: str | os.PathLike[str]) -> pa.Table:
    """Merge ``manifest.parquet`` and the part files into ``manifest.parquet`` (atomically), then drop the parts.

    Rows are sorted by ``(label, image_id, copy)``. A crash between the rename and the deletions leaves parts whose
    rows are already in the file; readers and the next consolidation keep each key once.
    """
    out_dir = Path(out_dir)
    parts = part_paths(out_dir)
    table = _read(out_dir, parts)  # exactly the parts it deletes: one listing, even with writers still at work
    if parts or not (out_dir / MANIFEST_FILE).is_file():
        order = pc.sort_indices(
            table, sort_keys=[("label", "ascending"), ("image_id", "ascending"), ("copy", "ascending")]
        )
        table = table.take(order)
        write_atomic(table, out_dir / MANIFEST_FILE)
    for path in parts:
        path.unlink(missing_ok=True)
    return table

"""``augmentor preprocess``: mask every image of a dataset listing into resumable Parquet shards."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from augmentor.config import from_dict, to_dict
from augmentor.errors import InputError
from augmentor.faces import FaceMasker, MaskedFace, MaskingConfig
from augmentor.locking import output_lock
from augmentor.parquet import REDO_PREPROCESS, read_table
from augmentor.preprocessing.shards import SHARD_SCHEMA, encode_png, shard_paths

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image_id", "identity", "path")
CONFIG_NAME = "preprocess.json"
SUMMARY_NAME = "summary.json"


@dataclass
class PreprocessSummary:
    """Counts over the whole output folder (earlier runs included) and this run's speed."""

    total: int = 0  # rows in the output folder
    skipped: int = 0  # rows already done by an earlier run
    processed: int = 0  # rows processed by this run
    seconds: float = 0.0  # this run's wall time
    workers: int = 1
    status_counts: dict[str, int] = field(default_factory=dict)  # ok / no_face / error
    reason_counts: dict[str, int] = field(default_factory=dict)  # failure reason codes

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def face_row(face: MaskedFace) -> dict[str, Any]:
    """The shard columns that come from one masking result."""
    if not face.ok:
        return {
            "status": face.status.value,
            "reason": face.reason,
            "aligned": None,
            "mask": None,
            "landmarks": None,
            "mask_area": None,
            "border_fraction": None,
            "valid": None,
        }
    return {
        "status": face.status.value,
        "reason": "",
        "aligned": encode_png(face.aligned),
        "mask": encode_png(face.mask * 255),
        "landmarks": face.landmarks.reshape(-1).astype(np.float32),
        "mask_area": float(face.mask.mean()),
        "border_fraction": float(face.border_fraction),
        # Stored only where part of the crop lay outside the photo; null means every pixel is valid.
        "valid": encode_png(face.valid * 255) if face.valid is not None and not face.valid.all() else None,
    }


_WORKER_MASKER: FaceMasker | None = None


def _init_worker(masking: dict[str, Any]) -> None:
    global _WORKER_MASKER
    _WORKER_MASKER = FaceMasker(from_dict(MaskingConfig, masking))


def _process_batch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert _WORKER_MASKER is not None, "worker not initialised"
    rows = []
    for rec in records:
        row = {"image_id": rec["image_id"], "identity": rec["identity"], "source_path": rec["path"]}
        row.update(face_row(_WORKER_MASKER(rec["path"])))
        row.update({k: v for k, v in rec.items() if k not in REQUIRED_COLUMNS})
        rows.append(row)
    return rows


class _ShardWriter:
    """Buffers rows and writes numbered shards atomically (temp file + rename)."""

    def __init__(self, out_dir: Path, shard_size: int, extra_schema: list[pa.Field]):
        self.out_dir = out_dir
        self.shard_size = shard_size
        self.schema = pa.schema(list(SHARD_SCHEMA) + extra_schema)
        existing = [int(p.stem.split("-")[1]) for p in shard_paths(out_dir)]
        self.next_index = max(existing, default=-1) + 1
        self.buffer: list[dict[str, Any]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.buffer.extend(rows)
        while len(self.buffer) >= self.shard_size:
            self._write(self.buffer[: self.shard_size])
            self.buffer = self.buffer[self.shard_size :]

    def flush(self) -> None:
        if self.buffer:
            self._write(self.buffer)
            self.buffer = []

    def _write(self, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        final = self.out_dir / f"part-{self.next_index:05d}.parquet"
        tmp = self.out_dir / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self.next_index += 1


def _done_ids(out_dir: Path) -> set[str]:
    done: set[str] = set()
    for path in shard_paths(out_dir):
        done.update(read_table(path, ["image_id"], REDO_PREPROCESS)["image_id"].to_pylist())
    return done


def _check_config(out_dir: Path, masking: MaskingConfig) -> None:
    path = out_dir / CONFIG_NAME
    wanted = {"masking": to_dict(masking)}
    if path.is_file():
        found = json.loads(path.read_text())
        if found != wanted:
            raise InputError(
                f"{out_dir} was written with other masking settings ({found}); use a new --out folder "
                "or the same settings"
            )
    elif shard_paths(out_dir):
        raise InputError(f"{out_dir} holds shards but no {CONFIG_NAME}; it was not written by this tool")
    else:
        path.write_text(json.dumps(wanted, indent=2))


def _extra_fields(table: pd.DataFrame) -> list[pa.Field]:
    extras = [c for c in table.columns if c not in REQUIRED_COLUMNS]
    names = set(SHARD_SCHEMA.names)
    clash = [c for c in extras if c in names]
    if clash:
        raise InputError(f"dataset columns {clash} clash with shard columns")
    return list(pa.Schema.from_pandas(table[extras], preserve_index=False)) if extras else []


def summarize(out_dir: Path) -> tuple[int, Counter, Counter]:
    """Row, status and failure-reason counts over every shard of ``out_dir``."""
    statuses: Counter = Counter()
    reasons: Counter = Counter()
    for path in shard_paths(out_dir):
        t = read_table(path, ["status", "reason"], REDO_PREPROCESS)
        statuses.update(t["status"].to_pylist())
        reasons.update(r.split(":", 1)[0] for r in t["reason"].to_pylist() if r)
    return sum(statuses.values()), statuses, reasons


def preprocess(
    table: pd.DataFrame,
    out_dir: str | Path,
    masking: MaskingConfig | None = None,
    workers: int | None = None,
    shard_size: int = 1000,
    batch_size: int = 16,
    progress: bool = True,
) -> PreprocessSummary:
    """Mask every row of a dataset listing and write Parquet shards to ``out_dir``.

    Resumable: rows whose ``image_id`` is already in a completed shard are skipped, and shards appear
    only once complete (temp file + rename), so a run killed at any point loses at most the rows not
    yet written and never duplicates one.

    Args:
        table: Listing with columns ``image_id``, ``identity``, ``path`` and optional extras, which are
            copied into the shards.
        out_dir: Output folder (created if needed).
        masking: Masking settings; a rerun must use the same ones.
        workers: Processes (default: all cores). 1 runs in this process.
        shard_size: Rows per shard.
        batch_size: Images per task sent to a worker.
        progress: Show a tqdm progress bar.

    Raises:
        InputError: a bad listing, or a folder written with other masking settings.
        augmentor.locking.FolderInUseError: another process is writing to ``out_dir``.
    """
    masking = masking or MaskingConfig()
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"the listing lacks column(s) {missing}")
    duplicated = table["image_id"][table["image_id"].duplicated()]
    if len(duplicated):
        raise InputError(f"image_id must be unique; {len(duplicated)} repeat, e.g. {duplicated.iloc[0]!r}")
    out_dir = Path(out_dir)
    with output_lock(out_dir, "augmentor preprocess"):  # a second writer is refused, not run twice
        return _preprocess(table, out_dir, masking, workers, shard_size, batch_size, progress)


def _preprocess(
    table: pd.DataFrame,
    out_dir: Path,
    masking: MaskingConfig,
    workers: int | None,
    shard_size: int,
    batch_size: int,
    progress: bool,
) -> PreprocessSummary:
    """:func:`preprocess` on a checked listing, holding the output folder's lock."""
    from tqdm import tqdm

    for stale in out_dir.glob(".part-*.parquet.tmp"):
        stale.unlink()
    _check_config(out_dir, masking)

    done = _done_ids(out_dir)
    todo = table[~table["image_id"].isin(done)]
    workers = max(1, workers or os.cpu_count() or 1)
    summary = PreprocessSummary(skipped=len(table) - len(todo), workers=workers)
    if summary.skipped:
        log.info("resuming: %d of %d images already done", summary.skipped, len(table))
    writer = _ShardWriter(out_dir, shard_size, _extra_fields(table))
    records = todo.to_dict("records")
    batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    start = time.perf_counter()
    bar = tqdm(total=len(records), unit="img", desc="preprocess", disable=not progress)
    try:
        if workers == 1:
            _init_worker(to_dict(masking))
            results = map(_process_batch, batches)
            for rows in results:
                writer.add(rows)
                bar.update(len(rows))
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(to_dict(masking),)) as pool:
                for rows in pool.imap_unordered(_process_batch, batches):
                    writer.add(rows)
                    bar.update(len(rows))
    finally:
        writer.flush()  # on an interrupt, keep what is finished
        bar.close()
    summary.seconds = time.perf_counter() - start
    summary.processed = len(records)
    total, statuses, reasons = summarize(out_dir)
    summary.total = total
    summary.status_counts = dict(statuses)
    summary.reason_counts = dict(reasons)
    (out_dir / SUMMARY_NAME).write_text(
        json.dumps({**summary.__dict__, "images_per_second": summary.images_per_second}, indent=2)
    )
    return summary

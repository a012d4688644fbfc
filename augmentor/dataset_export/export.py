"""``augmentor export-dataset``: real crops and hallucinated copies into the formats other training stacks read.

The steps: open the sources, count their identities (a cheap first pass over two columns), number the identities,
then stream every ok row through decode / resize / JPEG (a thread pool) into the format's writer, next to
``samples.tsv`` (one line per sample: where it is in the export and where it came from). Everything is written into
a hidden staging folder beside ``out`` that is renamed to ``out`` at the end: a reader never sees half an export,
and a failed export leaves nothing behind. Memory holds one chunk of images at a time, whatever the dataset size.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from augmentor.dataset_export.encode import to_jpeg
from augmentor.dataset_export.labels import Labels
from augmentor.dataset_export.sources import REAL, Sample, Source, count_identities, iter_samples, open_source
from augmentor.dataset_export.writers import FORMATS, WRITERS
from augmentor.errors import InputError

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = (
    "key",
    "location",
    "label",
    "identity",
    "kind",
    "image_id",
    "source_path",
    "copy",
    "donor_image_id",
    "donor_identity",
    "origin",
)
CHUNK = 256  # samples encoded per thread-pool round: the images held in memory at once


@dataclass
class ExportSettings:
    """What ``export-dataset`` writes."""

    format: str = "imagefolder"  # one of writers.FORMATS
    size: int | None = None  # output side in px; None keeps the 128 px aligned crop
    jpeg_quality: int = 95  # JPEG quality, 1..100
    shard_size: int = 10_000  # samples per WebDataset tar or HF Parquet file
    workers: int | None = None  # encoding threads (default: all cores)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown format {self.format!r}; choose from {', '.join(FORMATS)}")


class ExportError(InputError):
    """An export that cannot be made (an output folder in the way, no rows)."""


def scan(sources: list[Source]) -> Labels:
    """Count every source's ok rows per identity and number the identities once over all of them."""
    real, copies = Counter(), Counter()
    for source in sources:
        counts = count_identities(source)
        (real if source.kind == REAL else copies).update(counts)
        log.info(
            "%s: %d %s rows (status ok), %d identities", source.path, sum(counts.values()), source.kind, len(counts)
        )
    labels = Labels.number(real, copies)
    if not labels.num_samples:
        raise ExportError("the sources hold no row with status ok")
    return labels


def staging_dir(out: Path) -> Path:
    """A new hidden folder beside ``out`` to write into.

    Raises:
        ExportError: ``out`` exists and is not an empty folder.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not empty: choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path) -> None:
    """Rename the finished staging folder to ``out`` (an empty ``out`` is replaced)."""
    if out.is_dir():
        out.rmdir()
    os.replace(staging, out)


def encoded(samples: Iterator[Sample], settings: ExportSettings) -> Iterator[tuple[Sample, bytes, int]]:
    """``(sample, JPEG bytes, side)`` in input order, encoded ``CHUNK`` at a time on a thread pool; the next chunk is
    encoded while the caller writes the current one (two chunks in memory at most)."""

    def encode(sample: Sample) -> tuple[bytes, int]:
        return to_jpeg(sample, settings.size, settings.jpeg_quality)

    with ThreadPoolExecutor(max_workers=settings.workers or os.cpu_count() or 1) as pool:
        current = None
        while True:
            chunk = list(itertools.islice(samples, CHUNK))
            following = zip(chunk, pool.map(encode, chunk), strict=True) if chunk else None  # submitted at once
            if current is not None:
                for sample, (jpeg, side) in current:
                    yield sample, jpeg, side
            if following is None:
                return
            current = following


def write_samples(sources: list[Source], labels: Labels, staging: Path, settings: ExportSettings) -> dict:
    """Stream every sample into the format's writer and ``samples.tsv``; returns the files and the side."""
    from tqdm import tqdm

    side = settings.size or _first_side(sources)
    writer = WRITERS[settings.format](staging, labels, settings.shard_size, side)
    samples = itertools.chain.from_iterable(iter_samples(s) for s in sources)
    with (
        (staging / "samples.tsv").open("w", newline="") as fh,
        tqdm(
            total=labels.num_samples, desc=f"export {settings.format}", unit="img", disable=not settings.progress
        ) as bar,
    ):
        table = csv.DictWriter(fh, SAMPLE_COLUMNS, delimiter="\t", lineterminator="\n")  # None is written empty
        table.writeheader()
        index = -1
        for index, (sample, jpeg, got) in enumerate(encoded(samples, settings)):
            if got != side:
                raise ExportError(f"{sample.path or sample.image_id} is {got} px, the others {side}: pass --size")
            key, label, meta = f"{index:09d}", labels.index[sample.identity], sample.metadata()
            location = writer.add(key, label, jpeg, meta)
            table.writerow({"key": key, "location": location, "label": label, **meta})
            bar.update()
    return {"files": writer.close(), "size": side, "num_samples": index + 1}


def _first_side(sources: list[Source]) -> int:
    """The side of the first sample: every sample must have it when no ``--size`` is given."""
    first = next(itertools.chain.from_iterable(iter_samples(s) for s in sources))
    return to_jpeg(first, None, 50)[1]


def export_dataset(sources: list[str | Path], out: str | Path, settings: ExportSettings | None = None) -> dict:
    """Export the ok rows of ``sources`` (preprocess folders, packs, ``augmentor run`` folders) to ``out``.

    Returns:
        The summary, also written as ``out/export.json``: counts, files, settings and the throughput.

    Raises:
        SourceError: a source that cannot be read (:class:`augmentor.dataset_export.sources.SourceError`).
        ExportError: ``out`` is in the way, or there is nothing to export.
    """
    settings = settings or ExportSettings()
    out = Path(out)
    start = time.perf_counter()
    opened = [open_source(path, index) for index, path in enumerate(sources)]
    labels = scan(opened)
    staging = staging_dir(out)
    try:
        written = write_samples(opened, labels, staging, settings)
        labels.write(staging / "labels.tsv")
        seconds = time.perf_counter() - start
        summary = {
            "format": settings.format,
            "sources": [{"path": str(s.path), "kind": s.kind, "origin": s.index} for s in opened],
            "num_identities": len(labels),
            "num_real": sum(labels.real),
            "num_copies": sum(labels.copies),
            **written,
            "settings": asdict(settings),
            "seconds": round(seconds, 2),
            "images_per_second": round(written["num_samples"] / seconds, 1),
        }
        (staging / "export.json").write_text(json.dumps(summary, indent=2))
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary

"""Throughput of ``augmentor export-dataset``: a synthetic 10k-image set (half real crops, half copies) in each format.

The bundled sample faces are preprocessed once; their crops are repeated into a preprocess folder (the real half)
and an ``augmentor run`` folder of PNG files (the copies), with every repeat a distinct image id. Each format is
then exported at ``--size`` and timed end to end (both passes, decoding, resizing, JPEG, writing, the rename).

    python benchmarks/export_throughput.py --images 10000 --work /tmp/export-bench \
        --json benchmarks/results/export_throughput.json
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq

from augmentor.dataset_export.export import ExportSettings, export_dataset
from augmentor.dataset_export.writers import FORMATS

log = logging.getLogger("export_throughput")
SHARD_ROWS = 1000


def sample_crops(work: Path) -> pa.Table:
    """The ok rows of the bundled samples, preprocessed once into ``work/samples``."""
    import pandas as pd

    from augmentor.preprocessing.preprocess import preprocess
    from augmentor.preprocessing.shards import read_shards
    from augmentor.samples import SAMPLES_DIR, SAMPLES_LIST

    listing = pd.read_csv(SAMPLES_LIST, sep="\t", dtype=str)
    table = pd.DataFrame(
        {
            "image_id": listing["path"],
            "identity": listing["identity"],
            "path": [str(SAMPLES_DIR / p) for p in listing["path"]],
        }
    )
    preprocess(table, work / "samples", workers=1, progress=False)
    return read_shards(work / "samples", status="ok")


def build_sources(work: Path, num_images: int) -> tuple[Path, Path]:
    """A preprocess folder of ``num_images // 2`` real rows and a run folder of the other half, as PNG files."""
    crops = sample_crops(work)
    real, run = work / "real", work / "run"
    shutil.rmtree(real, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    real.mkdir()
    (run / "images").mkdir(parents=True)
    num_real = num_images // 2
    rows = [crops.slice(i % crops.num_rows, 1).to_pylist()[0] for i in range(num_real)]
    for i, row in enumerate(rows):
        row["image_id"] = f"{row['image_id']}#{i}"
    for start in range(0, num_real, SHARD_ROWS):
        part = pa.Table.from_pylist(rows[start : start + SHARD_ROWS], schema=crops.schema)
        pq.write_table(part, real / f"part-{start // SHARD_ROWS:05d}.parquet")
    manifest = []
    for i in range(num_images - num_real):
        row = rows[i % num_real]
        rel = f"images/{i:06d}_hal0.png"
        (run / rel).write_bytes(row["aligned"])
        manifest.append(
            {
                "image_id": row["image_id"],
                "identity": row["identity"],
                "copy": 0,
                "source_path": row["source_path"],
                "output_path": rel,
                "status": "ok",
            }
        )
    pq.write_table(pa.Table.from_pylist(manifest), run / "manifest.parquet")
    return real, run


@click.command(context_settings={"show_default": True})
@click.option("--images", type=click.IntRange(min=2), default=10_000, help="Images in the synthetic set.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True, help="Scratch folder.")
@click.option("--size", type=int, default=112, help="Export --size.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Encoding threads (default: all cores).")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS), default=FORMATS, help="Formats.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Results.")
def main(images: int, work: Path, size: int, workers: int | None, formats: tuple[str, ...], json_path: Path | None):
    """Print a table of export throughput per format and optionally write it as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work.mkdir(parents=True, exist_ok=True)
    real, run = build_sources(work, images)
    results = []
    for fmt in formats:
        out = work / f"out-{fmt}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        summary = export_dataset([real, run], out, ExportSettings(fmt, size, 95, 10_000, workers, False))
        seconds = time.perf_counter() - started
        megabytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
        results.append(
            {
                "format": fmt,
                "images": summary["num_samples"],
                "seconds": round(seconds, 2),
                "images_per_second": round(summary["num_samples"] / seconds, 1),
                "output_mib": round(megabytes, 1),
            }
        )
        shutil.rmtree(out)
    print("| format | images | seconds | img/s | output MiB |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['format']} | {r['images']} | {r['seconds']} | {r['images_per_second']} | {r['output_mib']} |")
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "size": size}
    if json_path is not None:
        json_path.write_text(json.dumps({"machine": machine, "workers": workers, "results": results}, indent=2))


if __name__ == "__main__":
    main()

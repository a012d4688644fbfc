"""``augmentor export-dataset``: real crops and hallucinated copies for other training stacks (docs/export.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from augmentor.cli_errors import user_errors
from augmentor.options import (
    dry_run_option,
    int_option,
    out_dir_option,
    progress_option,
    workers_option,
)

FORMATS = ("imagefolder", "webdataset", "insightface", "hf")  # augmentor.dataset_export.writers.FORMATS; tested


@click.command("export-dataset", context_settings={"show_default": True})
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path), metavar="SOURCE...")
@click.option(
    "--to",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="imagefolder: <identity>/<key>.jpg; webdataset: tar shards of key.jpg/.cls/.json; insightface: "
    "train.rec/train.idx/property (arcface_torch); hf: Parquet that datasets.load_dataset reads as images.",
)
@out_dir_option("New (or empty) output folder; it appears only when the export is complete.")
@int_option(
    "--size",
    minimum=16,
    maximum=1024,
    metavar="PX",
    help="Output side in px (e.g. 112 for arcface-sized training: our eye-aligned crop resized, not insightface's "
    "five-point template). Default: keep the 128 px crop.",
)
@int_option("--jpeg-quality", minimum=1, maximum=100, default=95, metavar="Q", help="JPEG quality.")
@int_option("--shard-size", minimum=1, default=10_000, help="Samples per WebDataset tar shard or HF Parquet file.")
@workers_option("Encoding threads. Default: all cores.")
@progress_option()
@dry_run_option("Print the sources, counts and identities, then stop.")
def export_dataset(sources, fmt, out, size, jpeg_quality, shard_size, workers, progress, dry_run) -> None:
    """Export real crops and hallucinated copies to the formats other training stacks read.

    Each SOURCE is a preprocess output folder or pack (the real aligned crops) or an `augmentor run` folder (the
    copies); mix them freely. Identities are numbered once over all of them (labels.tsv); only ok rows are
    written, and samples.tsv records every sample's kind (real or copy), source image, copy number and donor.

    \b
    Examples:
      augmentor export-dataset runs/casia runs/casia-aug --to insightface --size 112 --out exports/casia-rec
      augmentor export-dataset runs/celeba runs/celeba-aug --to webdataset --shard-size 5000 --out exports/wds
      augmentor export-dataset runs/celeba-aug --to hf --out exports/hf
      augmentor export-dataset runs/lfw-sample --to imagefolder --out exports/folder -n
    """
    from augmentor.dataset_export.export import ExportSettings, scan
    from augmentor.dataset_export.export import export_dataset as run_export
    from augmentor.dataset_export.sources import open_source

    settings = ExportSettings(fmt, size, jpeg_quality, shard_size, workers, progress)
    with user_errors():
        if dry_run:
            opened = [open_source(path, i) for i, path in enumerate(sources)]
            labels = scan(opened)
            summary = {
                "out": str(out),
                "sources": [{"path": str(s.path), "kind": s.kind, "files": len(s.files)} for s in opened],
                "num_identities": len(labels),
                "num_real": sum(labels.real),
                "num_copies": sum(labels.copies),
                "settings": vars(settings),
            }
            click.echo(json.dumps(summary, indent=2))
            return
        summary = run_export(list(sources), out, settings)
    click.echo(
        f"{summary['num_samples']} images ({summary['num_real']} real, {summary['num_copies']} copies) of "
        f"{summary['num_identities']} identities at {summary['size']} px -> {out} "
        f"({summary['images_per_second']} img/s)"
    )

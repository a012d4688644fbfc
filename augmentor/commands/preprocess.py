"""``augmentor preprocess``: detect, align and mask every face of a dataset into Parquet shards."""

from __future__ import annotations

import json

import click

from augmentor.cli_errors import user_errors
from augmentor.options import (
    config_options,
    dataset_options,
    dry_run_option,
    int_option,
    limit_option,
    load_listing,
    out_dir_option,
    progress_option,
    workers_option,
)


@click.command("preprocess", context_settings={"show_default": True})
@dataset_options
@out_dir_option("Output folder for the Parquet shards. Rerun with the same folder to resume.")
@config_options(
    "Masking config (see configs/preprocess.yaml).",
    "Override a masking config value, e.g. --set detector=mtcnn. Repeatable.",
)
@workers_option("Worker processes. Default: all cores.")
@limit_option("Only the first N images of the listing (sorted by identity, image id).")
@int_option("--shard-size", minimum=1, default=1000, metavar="ROWS", help="Rows per Parquet shard.")
@progress_option()
@dry_run_option("Print the resolved settings and the image count, then stop.")
def preprocess(out, config_path, overrides, workers, limit, shard_size, progress, dry_run, **listing) -> None:
    """Detect, align and mask every face of a dataset into Parquet shards.

    Each row holds the 128x128 aligned crop, its face mask and the 68 aligned landmarks, or a status and
    reason when the image failed (no_face / error). A rerun with the same --out skips finished images.

    \b
    Examples:
      augmentor preprocess --out runs/samples
      augmentor preprocess --dataset lfw --root data/lfw/images --out runs/lfw
      augmentor preprocess --dataset list --root data/celeba/identities.tsv --out runs/celeba
    """
    from augmentor.config import load_config, to_dict
    from augmentor.faces import MaskingConfig
    from augmentor.preprocessing.preprocess import preprocess as run_preprocess
    from augmentor.visualize import shard_preview

    dataset, root, table = load_listing(**listing)
    with user_errors():
        masking = load_config(MaskingConfig, config_path, list(overrides))
    if limit is not None:
        table = table.head(limit)
    settings = {
        "dataset": dataset,
        "root": str(root),
        "out": str(out),
        "images": len(table),
        "masking": to_dict(masking),
        "workers": workers,
        "shard_size": shard_size,
    }
    if dry_run:
        click.echo(json.dumps(settings, indent=2))
        return
    with user_errors():
        summary = run_preprocess(table, out, masking=masking, workers=workers, shard_size=shard_size, progress=progress)
    counts = summary.status_counts
    click.echo(
        f"{summary.total} images in {out}: {counts.get('ok', 0)} ok, {counts.get('no_face', 0)} no face, "
        f"{counts.get('error', 0)} errors ({summary.skipped} already done, {summary.processed} processed "
        f"in {summary.seconds:.1f} s, {summary.images_per_second:.1f} img/s on {summary.workers} workers)"
    )
    for reason, count in sorted(summary.reason_counts.items()):
        click.echo(f"  {reason}: {count}")
    preview = shard_preview(out, out / "preview.png")
    if preview is not None:
        click.echo(f"preview: {preview}")

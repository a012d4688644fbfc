"""``augmentor export``: store a trained generator compactly, e.g. as the shipped default model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from augmentor.cli_errors import user_errors
from augmentor.options import (
    choice_option,
    float_option,
    folder_option,
    out_dir_option,
)


@click.command("export", context_settings={"show_default": True})
@folder_option(
    "--checkpoint", required=True, help="Checkpoint folder to export, e.g. runs/00003-cascade-cascade/checkpoint."
)
@out_dir_option("Destination folder; augmentor/weights/cascade128 makes it the shipped default model.")
@choice_option(
    "--dtype",
    choices=["bfloat16", "float16", "float32"],
    default="bfloat16",
    help="Stored precision of the weights (loading casts back to float32).",
)
@float_option(
    "--max-shard-mb",
    minimum=0.1,
    default=16.0,
    metavar="MIB",
    help="Split the weights into files of at most this size.",
)
@click.option(
    "--model-card",
    default="docs/model-card.md",
    metavar="PATH",
    help="Model card the exported config.json points to.",
)
@folder_option(
    "--interpolate-from",
    help="Export a network interpolation BASE + ALPHA x (CHECKPOINT - BASE) with this checkpoint folder as BASE "
    "(ESRGAN's remedy for a GAN fine-tune that lost structure; docs/model.md).",
)
@click.option(
    "--alpha",
    type=float,
    default=1.0,
    metavar="A",
    help="With --interpolate-from: the weight of --checkpoint (0: the base, 1: the checkpoint itself).",
)
def export(
    checkpoint: Path,
    out: Path,
    dtype: str,
    max_shard_mb: float,
    model_card: str,
    interpolate_from: Path | None,
    alpha: float,
) -> None:
    """Export a trained generator as a compact checkpoint, e.g. to ship it as the default model.

    Stores the weights in bf16 (half the size, outputs change by about 1/100 of the range), sharded when large,
    with the training summary carried into config.json. Reloads the result and prints the largest output change.

    \b
    Examples:
      augmentor export --checkpoint runs/00000-cascade-cpu-interim/checkpoint --out augmentor/weights/cascade128
      augmentor export --checkpoint runs/00000-cascade-cpu-gan/epochs/epoch_0010 \\
          --interpolate-from augmentor/weights/cascade128 --alpha 0.6 --out /tmp/blend
    """
    if alpha != 1.0 and interpolate_from is None:
        raise click.UsageError("--alpha needs --interpolate-from")
    from augmentor.training.export import export_generator

    with user_errors():
        report = export_generator(
            checkpoint, out, dtype, max_shard_mb, {"model_card": model_card}, interpolate_from, alpha
        )
    click.echo(json.dumps(report, indent=2))

"""``augmentor pack``: a compact copy of a preprocess output for training on a GPU machine."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from augmentor.cli_errors import user_errors
from augmentor.options import (
    choice_option,
    dry_run_option,
    file_option,
    float_option,
    folder_option,
    int_option,
    out_dir_option,
)


@click.command("pack", context_settings={"show_default": True})
@folder_option("--data", required=True, help="Output folder of `augmentor preprocess`.")
@out_dir_option("Pack folder (git-ignored): faces.parquet, identity.safetensors, pack.json.", default=Path("pack"))
@choice_option(
    "--format",
    "image_format",
    choices=["webp", "jpeg"],
    default="webp",
    help="Codec of the aligned crops. WebP is about 25% smaller than JPEG at a lower error.",
)
@int_option(
    "--quality",
    minimum=90,
    maximum=100,
    default=92,
    metavar="Q",
    help="Encoder quality, 90..100. WebP on CelebA: 92 = 1.8, 95 = 1.5 grey levels mean abs error.",
)
@float_option(
    "--max-padded-fraction",
    minimum=0.0,
    maximum=1.0,
    default=1.0,
    metavar="F",
    help="Leave out faces whose listing's padded_fraction is larger, as data.max_padded_fraction does.",
)
@file_option(
    "--identity-weights",
    metavar="DAT",
    help="dlib_face_recognition_resnet_model_v1.dat to convert. Default: the face-recognition-models copy.",
)
@dry_run_option()
def pack(
    data: Path,
    out: Path,
    image_format: str,
    quality: int,
    max_padded_fraction: float,
    identity_weights: Path | None,
    dry_run: bool,
) -> None:
    """Pack the usable faces of a preprocess output and the identity network's fp16 weights for a GPU machine.

    The pack (about 36 MiB for 5,000 CelebA faces) is what a GPU machine without cv2 or dlib trains on:
    `augmentor train --data pack --set loss.identity_weights=pack/identity.safetensors`, or
    scripts/gpu/train.sh (see docs/gpu-training.md).

    \b
    Examples:
      augmentor pack --data runs/celeba --out pack
      augmentor pack --data runs/celeba --out pack --format jpeg --quality 95
    """
    from augmentor.training.pack import PackConfig, build_pack

    config = PackConfig(
        image_format=image_format,
        quality=quality,
        max_padded_fraction=max_padded_fraction,
        identity_weights=str(identity_weights) if identity_weights else None,
    )
    if dry_run:
        click.echo(json.dumps({"data": str(data), "out": str(out), **asdict(config)}, indent=2))
        return
    with user_errors():
        summary = build_pack(data, out, config)
    for name, size in summary.file_bytes.items():
        click.echo(f"{out / name}: {size / 2**20:.2f} MiB")
    click.echo(
        f"{summary.rows} faces ({summary.dropped} left out) in {out}: {summary.total_mib:.2f} MiB, "
        f"{image_format} q{quality}, mean abs error {summary.mean_abs_error:.2f} grey levels, {summary.seconds:.1f} s"
    )

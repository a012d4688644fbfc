"""Turn a training run's checkpoint into a compact, shippable one (bf16 or fp16 weights, optional shards)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from augmentor.errors import InputError
from augmentor.models import input_pyramid
from augmentor.training.checkpoints import load_generator, save_generator
from augmentor.training.interpolate import interpolate_generators

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
CARRIED_FIELDS = ("loss", "regime", "data_fingerprint", "epochs_trained", "steps", "best_val_loss", "code_version")


def export_generator(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "bfloat16",
    max_shard_mb: float | None = 16.0,
    extra: dict | None = None,
    interpolate_from: str | Path | None = None,
    alpha: float = 1.0,
) -> dict:
    """Write ``checkpoint``'s generator to ``out`` in ``dtype``, then reload it and measure the rounding.

    Args:
        checkpoint: A checkpoint folder (``model.safetensors`` + ``config.json``).
        out: Destination folder, e.g. ``augmentor/weights/cascade128``.
        dtype: ``bfloat16``, ``float16`` or ``float32``.
        max_shard_mb: Largest weights file in MiB (None: one file).
        extra: More fields for ``config.json`` (e.g. ``{"model_card": "docs/model-card.md"}``).
        interpolate_from: Export ``interpolate_from + alpha * (checkpoint - interpolate_from)`` instead, a
            network interpolation (see :mod:`augmentor.training.interpolate`), recorded in ``config.json``.
        alpha: The interpolation weight of ``checkpoint`` (1: ``checkpoint`` itself).

    Returns:
        ``{"out", "parameters", "bytes", "files", "max_abs_diff"}``: ``max_abs_diff`` is the largest output
        difference, in [-1, 1] units, between the source and the exported model on a fixed random input.

    Raises:
        InputError: unknown ``dtype``, or generators that cannot be blended.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if interpolate_from is not None:
        source, config = interpolate_generators(interpolate_from, checkpoint, alpha)
    else:
        source, config = load_generator(checkpoint, "cpu")
    meta = {k: config[k] for k in (*CARRIED_FIELDS, "interpolation") if k in config}
    meta["exported_from"] = str(Path(checkpoint))
    meta["stored_dtype"] = dtype
    meta.update(extra or {})
    max_bytes = int(max_shard_mb * 2**20) if max_shard_mb else None
    out = save_generator(source, out, meta, dtype=DTYPES[dtype], max_shard_bytes=max_bytes)
    exported, _ = load_generator(out, "cpu")
    files = sorted(p for p in Path(out).iterdir() if p.is_file() and not p.name.startswith("."))
    diff = _output_difference(source, exported)
    report = {
        "out": str(out),
        "parameters": sum(p.numel() for p in source.parameters()),
        "bytes": sum(p.stat().st_size for p in files),
        "files": [p.name for p in files],
        "max_abs_diff": diff,
    }
    log.info("exported %s to %s (%s, %d bytes, max output change %.4f)", checkpoint, out, dtype, report["bytes"], diff)
    return report


@torch.no_grad()
def _output_difference(a: torch.nn.Module, b: torch.nn.Module, size: int | None = None) -> float:
    """Largest absolute output difference of two cascades on one seeded random face-like input."""
    size = size or a.resolutions[-1]
    g = torch.Generator().manual_seed(0)
    masked = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = size / 2
    mask = (((yy - centre) ** 2 + (xx - centre) ** 2) < (size / 4) ** 2).float()[None, None].expand(2, 1, size, size)
    levels = input_pyramid(masked * mask, mask.contiguous(), a.resolutions)
    kwargs = {}
    if a.config.noise_channels:
        kwargs["noise"] = {r: torch.randn(2, a.config.noise_channels, r, r, generator=g) for r in a.resolutions}
    out_a, out_b = a(levels, **kwargs), b(levels, **kwargs)
    top = a.resolutions[-1]
    return float((out_a[top] - out_b[top]).abs().max())

"""Copy a finished training run into the folder a GPU machine sends back; scripts/gpu/train.sh calls it.

At most 8 files of at most 16 MiB each come back. In order of importance: the best generator in bf16 (``generator/``:
config.json and model.safetensors, sharded with an index when over 16 MiB), metrics.jsonl, loss_curves.png, the
last sample grid and, when it fits, ``resume.tar`` (the run folder less its samples: what ``--resume`` needs).
Files already in the folder (train.sh's ``train.log``) count towards the 8.

Usage: ``PYTHONPATH=. python scripts/gpu/collect.py RUN_DIR OUT``
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import click
import torch

from augmentor.training.checkpoints import load_generator, save_generator

log = logging.getLogger("collect")

MIB = 2**20
RESUME_PARTS = ("train_config.json", "metrics.jsonl", "checkpoint", "last", "resume")  # what `train --resume` reads
NOT_CARRIED = ("format", "format_version", "architecture", "code_version")  # rewritten by save_generator


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def collect(run_dir: Path, out: Path, max_files: int = 8, max_bytes: int = 16 * MIB) -> dict[str, int]:
    """Copy the results of ``run_dir`` into ``out`` within the file-count and file-size limits.

    Returns:
        ``{path relative to out: bytes}`` of every file in ``out``.

    Raises:
        FileNotFoundError: the run has no ``checkpoint/``.
    """
    out.mkdir(parents=True, exist_ok=True)
    generator, config = load_generator(run_dir / "checkpoint")
    meta = {k: v for k, v in config.items() if k not in NOT_CARRIED}
    meta.update(run=run_dir.name, stored_dtype="bfloat16")
    # A shard's header adds a few KiB to its tensor bytes; 1 MiB of room keeps every file under max_bytes.
    save_generator(generator, out / "generator", meta, dtype=torch.bfloat16, max_shard_bytes=max_bytes - MIB)
    samples = sorted((run_dir / "samples").glob("epoch_*.png"))
    for source in [run_dir / "metrics.jsonl", run_dir / "loss_curves.png", *samples[-1:]]:
        if not source.is_file():
            log.warning("%s is missing", source)
        elif len(_files(out)) >= max_files:
            log.warning("%s left out: %d files already", source.name, max_files)
        else:
            (out / source.name).write_bytes(source.read_bytes())
    parts = [run_dir / name for name in RESUME_PARTS if (run_dir / name).exists()]
    size = sum(p.stat().st_size for part in parts for p in ([part] if part.is_file() else _files(part)))
    if size > max_bytes - MIB:
        log.warning("resume state is %.1f MiB, over %.0f MiB: not returned", size / MIB, max_bytes / MIB)
    elif len(_files(out)) >= max_files:
        log.warning("resume.tar left out: %d files already", max_files)
    else:
        with tarfile.open(out / "resume.tar", "w") as tar:
            for part in parts:
                tar.add(part, arcname=f"{run_dir.name}/{part.name}")
    sizes = {str(p.relative_to(out)): p.stat().st_size for p in _files(out)}
    too_big = [name for name, n in sizes.items() if n > max_bytes]
    if too_big:
        log.warning("over %.0f MiB, will not come back: %s", max_bytes / MIB, ", ".join(too_big))
    return sizes


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="RUN_DIR")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), metavar="OUT")
@click.option("--max-files", type=click.IntRange(min=1), default=8, show_default=True, help="Most files in OUT.")
@click.option("--max-mb", type=click.FloatRange(min=2), default=16.0, show_default=True, help="Largest file, MiB.")
def main(run_dir: Path, out: Path, max_files: int, max_mb: float) -> None:
    """Copy RUN_DIR's generator (bf16), metrics, curves, last samples and resume state into OUT."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sizes = collect(run_dir, out, max_files, int(max_mb * MIB))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"files": len(sizes), "mib": {k: round(v / MIB, 2) for k, v in sizes.items()}}, indent=2))


if __name__ == "__main__":
    main()

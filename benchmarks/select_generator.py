"""Pick the generator to ship from a training run, on CelebA validation faces only (never LFW).

Scores the base model (by default the shipped one), every chosen epoch of a run, and network interpolations
``base + alpha * (epoch - base)`` (augmentor/training/interpolate.py) on the run's own validation identities,
restricted to the faces whose 128 px window lies wholly inside the photo (so SSIM sees no padding): whole-image
SSIM (scikit-image's, evaluation/metrics.py) and multi-scale SWD (evaluation/swd.py), fp32.

The rule: among the candidates whose SSIM is at least the base's minus ``--ssim-tolerance``, the one with the
lowest mean of SWD at 128 and 64 px. It prints a table and writes JSON; ship the pick with ``augmentor export``
(``--interpolate-from`` for a blend) after checking it on LFW with ``augmentor evaluate``.

    python benchmarks/select_generator.py --run runs/00000-cascade-cpu-gan --epochs 5,10,15,20 \
        --alphas 0.5,0.6,0.7,1 --out benchmarks/results/select_generator.json
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

from augmentor.options import folder_option

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augmentor.config import from_dict
from augmentor.evaluation.metrics import ssim
from augmentor.evaluation.swd import multiscale_swd
from augmentor.hallucinator import Hallucinator
from augmentor.training.checkpoints import read_config
from augmentor.training.data import load_faces, split_by_identity
from augmentor.training.interpolate import base_state, blend_states
from augmentor.training.loop import TrainConfig

log = logging.getLogger("select_generator")
SHIPPED = ROOT / "augmentor" / "weights" / "cascade128"


def validation_faces(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's validation faces (its own identity split) whose window lies inside the photo: uint8 images, masks."""
    cfg = from_dict(TrainConfig, json.loads((run / "train_config.json").read_text()))
    faces = load_faces(cfg.data)
    _, val = split_by_identity(faces.identities, cfg.data.val_fraction, cfg.seed)
    subset = faces.subset(val)
    inside = subset.inside_photo()
    if len(inside) < 8:
        raise click.ClickException(f"only {len(inside)} validation faces lie inside their photos: too few to select")
    images = subset.images[inside].permute(0, 2, 3, 1).numpy()
    masks = subset.masks[inside, 0].numpy()
    log.info("%d of %d validation faces lie wholly inside their photos", len(inside), len(subset))
    return images, masks


def score(hallucinator: Hallucinator, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean SSIM and SWD per level of one model on the faces (fixed noise seeds, one per face)."""
    out = hallucinator(images * masks[..., None], masks, seeds=list(range(len(images))))
    values = ssim(out, images)
    values = values["ssim"] if isinstance(values, dict) else values
    row = {"ssim": float(np.nanmean(values))}
    row.update({f"swd_{level}": float(v) for level, v in multiscale_swd(images, out, seed=0).items()})
    return row


def choose(rows: list[dict], tolerance: float) -> dict:
    """The rule: SSIM within ``tolerance`` of the base's, then the lowest mean SWD at 128 and 64 px."""
    base = next(r for r in rows if r["name"] == "base")
    allowed = [r for r in rows if r["ssim"] >= base["ssim"] - tolerance]
    return min(allowed, key=lambda r: (r["swd_128"] + r["swd_64"]) / 2)


@click.command(context_settings={"show_default": True})
@folder_option(
    "--run",
    required=True,
    help="Training run folder (its train_config.json gives the data and the validation split).",
)
@click.option("--epochs", default="", metavar="E,E", help="Epochs of the run to score (epochs/epoch_NNNN); empty: all.")
@click.option(
    "--alphas",
    default="1",
    metavar="A,A",
    help="Interpolation weights of each epoch against the base (1: the epoch itself).",
)
@folder_option("--base", default=SHIPPED, help="The model to beat and to interpolate from.")
@click.option(
    "--ssim-tolerance", type=float, default=0.003, help="How far below the base's validation SSIM a candidate may fall."
)
@click.option("--threads", type=int, default=2, help="torch threads.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON output file.")
def main(run: Path, epochs: str, alphas: str, base: Path, ssim_tolerance: float, threads: int, out: Path) -> None:
    """Score a run's epochs and their blends with the base on validation faces; print and save the pick."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(threads)
    folders = sorted((run / "epochs").glob("epoch_*"))
    if epochs:
        wanted = {int(e) for e in epochs.split(",")}
        folders = [f for f in folders if int(f.name.split("_")[1]) in wanted]
    if not folders:
        raise click.ClickException(f"no epochs/epoch_NNNN folders to score in {run}")
    weights = [float(a) for a in alphas.split(",")]
    images, masks = validation_faces(run)
    started = time.perf_counter()
    hallucinator = Hallucinator.from_pretrained(base, device="cpu", precision="fp32")
    rows = [{"name": "base", "path": str(base), "alpha": 0.0, **score(hallucinator, images, masks)}]
    base_states: dict[str, dict] = {}  # the base grown to each architecture met, read once
    for folder in folders:
        hallucinator = Hallucinator.from_pretrained(folder, device="cpu", precision="fp32")
        tuned = {k: v.clone() for k, v in hallucinator.model.state_dict().items()}
        architecture = json.dumps(read_config(folder)["architecture"], sort_keys=True)
        if architecture not in base_states:
            base_states[architecture] = base_state(base, json.loads(architecture))
        for alpha in weights:
            blend = tuned if alpha == 1.0 else blend_states(base_states[architecture], tuned, alpha)
            hallucinator.model.load_state_dict(blend)
            rows.append(
                {
                    "name": f"{folder.name}@{alpha:g}",
                    "path": str(folder),
                    "alpha": alpha,
                    **score(hallucinator, images, masks),
                }
            )
            log.info("%s", rows[-1])
    pick = choose(rows, ssim_tolerance)
    lines = ["| candidate | SSIM | SWD128 | SWD64 | SWD32 | SWD16 |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        mark = " **(pick)**" if r is pick else ""
        lines.append(
            f"| {r['name']}{mark} | {r['ssim']:.4f} | {r['swd_128']:.1f} | {r['swd_64']:.1f} | "
            f"{r['swd_32']:.1f} | {r['swd_16']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "run": str(run),
                "faces": len(images),
                "base": str(base),
                "ssim_tolerance": ssim_tolerance,
                "rows": rows,
                "pick": pick,
                "seconds": round(time.perf_counter() - started, 1),
                "table": table,
            },
            indent=2,
        )
    )
    print(f"pick: {pick['name']} ({pick['path']}, alpha {pick['alpha']:g}); wrote {out}")


if __name__ == "__main__":
    main()

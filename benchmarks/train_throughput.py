"""Training throughput (images/s) of the cascade: full loss set vs generator alone, paper vs default widths.

    python benchmarks/train_throughput.py                       # CPU here: small step counts
    python benchmarks/train_throughput.py --batch-size 64 --steps 50 --device cuda

Faces are synthetic (random pixels, an elliptical face mask) unless --data points at preprocess shards:
throughput does not depend on content.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from augmentor.models import DEFAULT_WIDTHS, PAPER_WIDTHS, CascadeConfig
from augmentor.training.data import DataConfig, FaceSet, load_faces
from augmentor.training.loop import TrainConfig, Trainer
from augmentor.training.losses import LossConfig

PAPER_SAMPLES = 1_260_000  # 50 epochs x 12.6k images, mirrored


def synthetic_faces(num: int, size: int = 128) -> FaceSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num, 3, size, size), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ellipse = (((xx - 64) / 26) ** 2 + ((yy - 70) / 34) ** 2 <= 1).to(torch.uint8)
    masks = ellipse.expand(num, 1, size, size).contiguous()
    ids = [f"s{i}" for i in range(num)]
    return FaceSet(images, masks, ids, ids, "synthetic")


def measure(cfg: TrainConfig, faces: FaceSet, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, faces)
        noise = torch.Generator(trainer.device).manual_seed(0)
        n = cfg.batch_size
        images, masks = trainer.train_images[:n], trainer.train_masks[:n]
        for _ in range(warmup):
            trainer.train_step(images, masks, 128, 1.0, noise)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            logs = trainer.train_step(images, masks, 128, 1.0, noise)
        float(logs["g_total"])  # wait for the device
        return steps * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=10, help="images per step (paper: 10)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--data", type=Path, default=None, help="preprocess shards to use instead of synthetic faces")
    parser.add_argument("--widths", choices=["both", "paper", "default"], default="both", help="which widths to time")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/train_throughput.json"), help="JSON report"
    )
    args = parser.parse_args()

    faces = (
        load_faces(DataConfig(path=str(args.data), limit=256))
        if args.data
        else synthetic_faces(max(64, args.batch_size))
    )
    widths = {"paper": PAPER_WIDTHS, "default": DEFAULT_WIDTHS}
    if args.widths != "both":
        widths = {args.widths: widths[args.widths]}
    losses = {"full": LossConfig(), "generator_only": LossConfig(perceptual=0, adversarial=0, identity=0, tv=0)}
    base = TrainConfig(batch_size=args.batch_size, device=args.device, data=DataConfig(val_fraction=0.0))
    results = []
    for wname, w in widths.items():
        for lname, loss in losses.items():
            cfg = dataclasses.replace(base, model=CascadeConfig(widths=dict(w)), loss=loss)
            ips = measure(cfg, faces, args.steps, args.warmup)
            row = {
                "widths": wname,
                "losses": lname,
                "images_per_second": round(ips, 2),
                "paper_schedule_hours": round(PAPER_SAMPLES / ips / 3600, 2),
            }
            results.append(row)
            print(
                f"{wname:8} {lname:15} {ips:9.2f} img/s   paper schedule (1.26M samples): {row['paper_schedule_hours']} h"
            )
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    report = {
        "device": device,
        "machine": platform.machine(),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Training throughput (images/s) of the cascade on this machine: the speed steps of issue 15, before and after,
measured in one run with the settings interleaved, so a drift of the machine's speed hits all of them alike.

    python benchmarks/train_throughput.py                                  # CPU: cpu-interim recipe, 3 rounds
    python benchmarks/train_throughput.py --data /root/data/pre-celeba --rounds 5 --steps 4
    python benchmarks/train_throughput.py --device cuda --batch-size 64 --config configs/train/cascade.yaml

Settings, each adding one change to the one before:
  before        the --config recipe as it trained before issue 15: fp32, contiguous layout, plain Adam
  bf16+cl       bf16 autocast (where the CPU has native bf16) and channels_last for every network
  fused-adam    Adam's fused kernel
  d-from-32     discriminators on the 32, 64 and 128 px blocks only
  recipe        configs/train/cpu-gan.yaml as trained (adds DiffAugment, noise channels, mode seeking, R1 if set)

Faces are synthetic (random pixels, an elliptical face mask) unless --data points at preprocess shards: throughput
does not depend on content. "recipe" with mode seeking repeats half of each batch with other noise; its figure
counts every image of the batch, and unique faces/s is half of it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from record import write_record

from augmentor.config import load_config
from augmentor.precision import native_bf16
from augmentor.training.data import DataConfig, FaceSet, load_faces
from augmentor.training.loop import TrainConfig, Trainer

STEPS = {
    "before": ["bf16=false", "channels_last=false", "fused_adam=false"],
    "bf16+cl": ["fused_adam=false"],
    "fused-adam": [],
    "d-from-32": ["loss.adversarial_from=32"],
}


def synthetic_faces(num: int, size: int = 128) -> FaceSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num, 3, size, size), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ellipse = (((xx - 64) / 26) ** 2 + ((yy - 70) / 34) ** 2 <= 1).to(torch.uint8)
    masks = ellipse.expand(num, 1, size, size).contiguous()
    ids = [f"s{i}" for i in range(num)]
    return FaceSet(images, masks, ids, ids, "synthetic")


def build(config: Path, overrides: list[str], args) -> TrainConfig:
    base = [f"batch_size={args.batch_size}", f"device={args.device}", "data.val_fraction=0.0", "init_from=null"]
    return load_config(TrainConfig, config, base + overrides)


def measure(trainer: Trainer, steps: int) -> float:
    n = trainer.cfg.batch_size
    noise = torch.Generator(trainer.device).manual_seed(0)
    images, masks, valid = trainer.train_images[:n], trainer.train_masks[:n], trainer.train_valid[:n]
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        logs = trainer.train_step(images, masks, 128, 1.0, noise, valid)
    float(logs["g_total"])  # wait for the device
    return steps * n / (time.perf_counter() - start)


def step_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options this benchmark shares with profile_train_step.py: recipes, device, batch, steps, data, output."""
    parser.add_argument("--config", type=Path, default=Path("configs/train/cpu-interim.yaml"), help="the recipe")
    parser.add_argument("--recipe", type=Path, default=Path("configs/train/cpu-gan.yaml"), help="the new recipe")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step")
    parser.add_argument("--steps", type=int, default=3, help="timed (or profiled) steps per setting and round")
    parser.add_argument("--data", type=Path, default=None, help="preprocess shards instead of synthetic faces")
    parser.add_argument("--out", type=Path, default=Path(out), help="JSON output file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_arguments(parser, "benchmarks/results/train_throughput.json")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; every setting is timed once per round")
    args = parser.parse_args()

    faces = load_faces(DataConfig(path=str(args.data), limit=64)) if args.data else synthetic_faces(64)
    settings = {name: build(args.config, over, args) for name, over in STEPS.items()}
    settings["recipe"] = build(args.recipe, ["data.extra_paths=[]"], args)
    rates: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: Trainer(cfg, Path(tmp) / name, faces) for name, cfg in settings.items()}
        for trainer in trainers.values():
            measure(trainer, 1)  # warm-up: allocator, oneDNN kernels
        for round_ in range(args.rounds):
            for name, trainer in trainers.items():
                rates[name].append(measure(trainer, args.steps))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()), flush=True)
    before = rates["before"]
    rows = []
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, before, strict=True)]
        rows.append(
            {
                "setting": name,
                "images_per_second_median": round(statistics.median(values), 2),
                "images_per_second": [round(v, 2) for v in values],
                "ratio_to_before_median": round(statistics.median(ratios), 2),
            }
        )
        print(f"{name:11} {rows[-1]['images_per_second_median']:7.2f} img/s  x{rows[-1]['ratio_to_before_median']:.2f}")
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)",
        "native_bf16": native_bf16(args.device),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": str(args.config),
        "recipe": str(args.recipe),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "data": str(args.data) if args.data else "synthetic",
        "results": rows,
    }
    write_record(args.out, report)


if __name__ == "__main__":
    main()

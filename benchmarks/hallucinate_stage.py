"""Throughput of the pipeline's hallucination stage alone, on faces masked beforehand (a GPU check).

The stage is ``pipelines.stages.Predictor``, the code ``augmentor run`` runs in its hallucinating actors: the
generator, then the dlib-ResNet match score of every output against its aligned original, numpy in and out. The
masked inputs come from an ``augmentor pack`` (or a preprocess folder), so nothing is detected or aligned here, and
the GPU machine needs neither dlib nor the landmark model: the pack's ``identity.safetensors`` replaces dlib's
``.dat``. It times three generators: the shipped one, and random ones at the default and at the paper's widths.

    python benchmarks/hallucinate_stage.py --faces pack --device cuda --out $OUT/hallucinate_stage.json
    python benchmarks/hallucinate_stage.py --faces pack --device cpu --images 64 --batch-size 16   # a quick check

On the GPU machine, where augmentor is not installed: ``run(command="PYTHONPATH=. python
benchmarks/hallucinate_stage.py --faces pack --device cuda --out $OUT/hallucinate_stage.json", carry=["pack"])``
(``augmentor pack --data runs/celeba --out pack`` first).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from record import write_record

from augmentor.hallucinator import default_weights
from augmentor.models import DEFAULT_WIDTHS, PAPER_WIDTHS, Cascade, CascadeConfig
from augmentor.training.checkpoints import save_generator
from augmentor.training.data import DataConfig, load_faces
from pipelines.stages import PASS_THROUGH, Predictor

RANDOM_WIDTHS = {"default widths (random)": DEFAULT_WIDTHS, "paper widths (random)": PAPER_WIDTHS}


def stage_batches(faces_path: str, images: int, batch_size: int) -> list[dict[str, np.ndarray]]:
    """``images`` masked faces (the pack's, repeated as needed) as the batches the mask stage would hand on."""
    faces = load_faces(DataConfig(path=faces_path))
    take = np.arange(images) % len(faces)
    aligned = faces.images[take].permute(0, 2, 3, 1).numpy()
    mask = faces.masks[take, 0].numpy()
    batches = []
    for start in range(0, images, batch_size):
        n = min(batch_size, images - start)
        batch = {name: np.asarray([""] * n, dtype=object) for name in PASS_THROUGH}
        batch.update(
            image_id=np.asarray([f"face{start + i}" for i in range(n)], dtype=object),
            label=np.zeros(n, np.int64),
            status=np.asarray(["ok"] * n, dtype=object),
            mask_area=mask[start : start + n].reshape(n, -1).mean(1),
            todo=np.ones(n, np.int64),
            mask_s=np.zeros(n),
            aligned=aligned[start : start + n],
            mask=mask[start : start + n],
        )
        batches.append(batch)
    return batches


def time_stage(model: Path, batches, device: str, batch_size: int, weights: str | None, warmup: int) -> dict:
    """Images/s of the whole stage and of the generator alone, after ``warmup`` batches."""
    start = time.perf_counter()
    stage = Predictor(str(model), device=device, batch_size=batch_size, descriptor_weights=weights)
    load_seconds = time.perf_counter() - start
    hal = stage.hallucinator
    cuda = hal.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(hal.device)

    for batch in batches[:warmup]:
        stage(batch)
    timed = batches[warmup:] or batches
    n = sum(len(b["image_id"]) for b in timed)
    sync()
    start = time.perf_counter()
    scores = [stage(batch)["match_score"] for batch in timed]
    sync()
    stage_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in timed:
            hal(batch["aligned"] * batch["mask"][..., None], batch["mask"])
    sync()
    generator_seconds = time.perf_counter() - start
    return {
        "parameters": sum(p.numel() for p in hal.model.parameters()),
        "widths": {str(k): v for k, v in hal.model.config.widths.items()},
        "images_timed": n,
        "model_load_seconds": round(load_seconds, 2),
        "stage_images_per_second": round(n / stage_seconds, 1),
        "generator_images_per_second": round(n / generator_seconds, 1),
        "mean_match_score": round(float(np.nanmean(np.concatenate(scores))), 4),
        "precision": stage.precision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", default="pack", help="An `augmentor pack` folder or a preprocess folder.")
    parser.add_argument(
        "--identity-weights",
        default=None,
        help="The match score's network: default <faces>/identity.safetensors if present, else dlib's .dat.",
    )
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:1, cpu ...")
    parser.add_argument("--images", type=int, default=16384, help="Faces to push through (repeats the set).")
    parser.add_argument("--batch-size", type=int, default=None, help="Faces per batch (default: 512 CUDA, 16 CPU).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed batches first (CUDA kernels, autotuning).")
    parser.add_argument("--skip-paper", action="store_true", help="Leave out the paper-width model (slow on CPU).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hallucinate_stage.json"), help="JSON")
    args = parser.parse_args()

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    batch_size = args.batch_size or (512 if device.startswith("cuda") else 16)
    weights = args.identity_weights
    if weights is None and (Path(args.faces) / "identity.safetensors").is_file():
        weights = str(Path(args.faces) / "identity.safetensors")
    torch.manual_seed(0)
    batches = stage_batches(args.faces, args.images, batch_size)
    models = {"shipped": default_weights()}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, widths in RANDOM_WIDTHS.items():
            if args.skip_paper and widths is PAPER_WIDTHS:
                continue
            models[label] = save_generator(Cascade(CascadeConfig(widths=dict(widths))), Path(tmp) / label, {})
        for label, model in models.items():
            results[label] = time_stage(model, batches, device, batch_size, weights, args.warmup)
            print(
                f"{label:<26} {results[label]['parameters'] / 1e6:6.1f}M params  "
                f"stage {results[label]['stage_images_per_second']:>9.1f} img/s  "
                f"generator alone {results[label]['generator_images_per_second']:>9.1f} img/s"
            )
    record = {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "faces": args.faces,
        "identity_weights": weights or "dlib .dat",
        "images": args.images,
        "batch_size": batch_size,
        "results": results,
    }
    write_record(args.out, record)


if __name__ == "__main__":
    main()

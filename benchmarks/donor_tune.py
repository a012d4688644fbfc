"""Tune the donor method's search and composition settings on CelebA validation identities (never on LFW).

Splits a CelebA preprocess folder by identity (``augmentor.training.data.split_by_identity``): the training
identities become the donor bank, the validation identities the targets, whose true context is known. Each setting
is scored on the targets by how well the composite continues the face where it matters most, the seam:

- ``seam_l1``: mean absolute RGB error in the ring 1..8 px outside the face mask, against the true photo;
- ``ssim``: whole-image SSIM against the true photo (the context is someone else's, so this stays low), torchmetrics'
  (11x11 Gaussian window, sigma 1.5), as in ``benchmarks/donor_quality.py``;
- ``seam_jump``: mean absolute RGB step across the mask edge (outside neighbour minus inside neighbour), minus the
  same step in the true photo: a visible seam shows as a positive value;
- ``match`` (with ``--appearance``): the pipeline's match score, Pearson correlation of the dlib-ResNet descriptors
  of the composite and the true photo.

``--appearance`` scores the opt-in appearance re-ranking (``appearance_weight``) instead of the default grid.

Prints a table and writes JSON::

    python benchmarks/donor_tune.py --celeba /root/data/pre-celeba --work /tmp/donor-tune --out benchmarks/results/donor_tune.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

GRID = {  # one change at a time from the defaults
    "defaults": {},
    "no refine": {"fit_outline": False},
    "no colour shift": {"colour_near": 0.0, "colour_far": 0.0},
    "colour far 0": {"colour_far": 0.0},
    "colour far 0.8": {"colour_far": 0.8},
    "colour decay 20": {"colour_decay": 20.0},
    "seam width 0": {"seam_width": 0, "band_dilation": 0},
    "seam width 3": {"seam_width": 3},
    "seam width 8": {"seam_width": 8},
    "band dilation 4": {"band_dilation": 4},
    "shape weight 0.3": {"shape_weight": 0.3},
    "shape weight 3": {"shape_weight": 3.0},
    "colour weight 0.3": {"colour_weight": 0.3},
    "colour weight 3": {"colour_weight": 3.0},
    "pose weight 0": {"pose_weight": 0.0},
}
APPEARANCE_GRID = {f"appearance {w:g}": {"appearance_weight": w} for w in (0.0, 0.5, 1.0, 2.0)}


def split_folder(celeba: Path, work: Path, val_fraction: float, seed: int) -> tuple[Path, Path]:
    """Write the training identities' rows as a preprocess folder (the bank) and the validation ones as another."""
    import pyarrow.parquet as pq

    from augmentor.preprocessing.shards import read_shards
    from augmentor.training.data import split_by_identity

    bank_dir, val_dir = work / "bank", work / "val"
    if (val_dir / "part-00000.parquet").is_file():
        return bank_dir, val_dir
    table = read_shards(celeba, status="ok")
    train, val = split_by_identity([str(i) for i in table["identity"].to_pylist()], val_fraction, seed)
    for folder, rows in ((bank_dir, train), (val_dir, val)):
        folder.mkdir(parents=True, exist_ok=True)
        part = table.take(rows)
        for start in range(0, part.num_rows, 1000):
            pq.write_table(part.slice(start, 1000), folder / f"part-{start // 1000:05d}.parquet")
    return bank_dir, val_dir


def load_targets(val_dir: Path, limit: int, seed: int) -> dict:
    from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

    table = read_shards(val_dir, status="ok")
    rows = np.sort(np.random.default_rng(seed).permutation(table.num_rows)[:limit])
    data = table.take(rows).to_pydict()
    return {
        "identity": [str(i) for i in data["identity"]],
        "aligned": np.stack([decode_png(b) for b in data["aligned"]]),
        "mask": np.stack([decode_mask(b) for b in data["mask"]]),
        "landmarks": np.asarray(data["landmarks"], np.float32).reshape(-1, 68, 2),
    }


def seam_scores(out: np.ndarray, truth: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from donor_quality import ssim_both

    l1, jumps = [], []
    kernel = np.ones((3, 3), np.uint8)
    for image, real, mask in zip(out.astype(np.float64), truth.astype(np.float64), masks, strict=True):
        ring = (cv2.dilate(mask, np.ones((17, 17), np.uint8)) > 0) & (mask == 0)
        l1.append(np.abs(image[ring] - real[ring]).mean())
        outside = (cv2.dilate(mask, kernel) > 0) & (mask == 0)  # 1 px outside the edge
        inside = (mask > 0) & (cv2.erode(mask, kernel) == 0)  # 1 px inside
        jumps.append(
            abs(image[outside].mean(0) - image[inside].mean(0)).mean()
            - abs(real[outside].mean(0) - real[inside].mean(0)).mean()
        )
    whole, _ = ssim_both(out, truth, masks)
    return {"seam_l1": float(np.mean(l1)), "seam_jump": float(np.mean(jumps)), "ssim": float(whole.mean())}


def match_score(out: np.ndarray, truth: np.ndarray) -> float:
    """Mean Pearson correlation of whole-image dlib-ResNet descriptors, composite vs true photo (paper eq. 7)."""
    from augmentor.evaluation.metrics import FaceDescriptor, pearson, to_tensor

    descriptor = FaceDescriptor()
    return float(pearson(descriptor(to_tensor(out)), descriptor(to_tensor(truth))).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba", type=Path, required=True, help="CelebA preprocess output folder")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the split and the bank")
    parser.add_argument("--limit", type=int, default=150, help="validation targets")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--appearance", action="store_true", help="score the appearance re-ranking weights")
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from augmentor.donors import DonorBank, DonorConfig

    bank_dir, val_dir = split_folder(args.celeba, args.work, args.val_fraction, args.seed)
    bank = DonorBank.load(bank_dir, DonorConfig(appearance_weight=1.0) if args.appearance else None)
    targets = load_targets(val_dir, args.limit, args.seed)
    base = bank.config
    report = {"bank": str(bank_dir), "donors": len(bank), "targets": len(targets["identity"]), "settings": {}}
    print(f"{len(bank)} donors, {len(targets['identity'])} validation targets")
    print(f"{'setting':<20} {'seam L1':>8} {'seam jump':>9} {'SSIM':>6} {'ms/face':>8} {'match':>6}")
    for name, change in (APPEARANCE_GRID if args.appearance else GRID).items():
        bank.config = dataclasses.replace(base, **change)
        start = time.perf_counter()
        results = bank.recontext(targets["aligned"], targets["mask"], targets["landmarks"], targets["identity"], k=1)
        seconds = time.perf_counter() - start
        scores = seam_scores(np.stack([r[0].image for r in results]), targets["aligned"], targets["mask"])
        scores["ms_per_face"] = 1000 * seconds / len(results)
        if args.appearance:
            scores["match"] = match_score(np.stack([r[0].image for r in results]), targets["aligned"])
        report["settings"][name] = {"change": change, **scores}
        print(
            f"{name:<20} {scores['seam_l1']:>8.2f} {scores['seam_jump']:>9.2f} {scores['ssim']:>6.3f} "
            f"{scores['ms_per_face']:>8.1f} {scores.get('match', float('nan')):>6.3f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

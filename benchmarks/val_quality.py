"""Score checkpoints against the classical baselines on the CelebA validation identities of a training run.

This is where loss weights and schedules are tuned (never on LFW, the test set). It reuses the training run's
data filter and identity split, so the faces scored are exactly those the run held out, and the same scorer as
`augmentor evaluate`.

    python benchmarks/val_quality.py --run runs/interim/00000-cascade-cpu-interim \\
        --model last=runs/interim/00000-cascade-cpu-interim/last --limit 200 --json benchmarks/results/val.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from augmentor.evaluation.baselines import BASELINES, fill_all
from augmentor.evaluation.evaluate import EvalSettings, Scorer
from augmentor.hallucinator import Hallucinator
from augmentor.training.data import load_faces, split_by_identity
from augmentor.training.loop import load_train_config

COLUMNS = ("match", "ssim", "face_perceptual", "dlib_l2", "fid_face")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="Training run folder (train_config.json).")
    parser.add_argument("--data", type=Path, help="Override the run's data.path.")
    parser.add_argument("--model", action="append", default=[], help="LABEL=CHECKPOINT_DIR; repeatable.")
    parser.add_argument("--limit", type=int, default=200, help="Validation faces to score (first N).")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    cfg = load_train_config(args.run)
    if args.data:
        cfg.data.path = str(args.data)
    faces = load_faces(cfg.data)
    _, val_idx = split_by_identity(faces.identities, cfg.data.val_fraction, cfg.seed)
    val = faces.subset(val_idx[: args.limit])
    originals = val.images.permute(0, 2, 3, 1).numpy()
    masks = val.masks[:, 0].numpy()
    masked = originals * masks[..., None]
    outputs = {name: fill_all(fill, masked, masks) for name, fill in BASELINES.items()}
    for spec in args.model:
        label, _, path = spec.partition("=")
        outputs[label] = Hallucinator.from_pretrained(path, device="cpu")(masked, masks)
    scorer = Scorer(originals, EvalSettings(device="cpu"), torch.device("cpu"))
    results = {}
    for name, images in outputs.items():
        scores = scorer.per_image(images)
        results[name] = {k: float(np.mean(scores[k])) for k in COLUMNS if k in scores}
        results[name]["fid_face"] = scorer.set_level(images)["fid_face"]
    print(f"{len(val)} validation faces of {len(set(val.identities))} held-out identities ({cfg.data.path})")
    print(f"{'method':<22}" + "".join(f"{c:>17}" for c in COLUMNS))
    for name, row in results.items():
        print(f"{name:<22}" + "".join(f"{row[c]:>17.4f}" for c in COLUMNS))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "run": str(args.run),
            "faces": len(val),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "results": results,
        }
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

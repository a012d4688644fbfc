"""Benchmark the masking path: images/s per core, per stage and end to end (decode to Parquet write).

python benchmarks/preprocess.py --root ../shared/data/lfw/images --limit 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from record import write_record

from augmentor.datasets.adapters import load_dataset
from augmentor.faces import FaceMasker, load_image
from augmentor.faces.align import similarity_from_eyes, transform_points, warp
from augmentor.faces.detect import largest
from augmentor.faces.landmarks import eye_centres
from augmentor.faces.mask import hull_mask
from augmentor.preprocessing.preprocess import preprocess
from augmentor.preprocessing.shards import encode_png


def stage_times(paths: list[str]) -> dict[str, float]:
    """Mean milliseconds per image for each stage, in one process."""
    masker = FaceMasker()
    totals = dict.fromkeys(["decode", "detect", "landmarks", "align_mask", "png_encode"], 0.0)
    found = 0
    for path in paths:
        t0 = time.perf_counter()
        image = load_image(path)
        t1 = time.perf_counter()
        box = largest(masker.detector(image))
        t2 = time.perf_counter()
        totals["decode"] += t1 - t0
        totals["detect"] += t2 - t1
        if box is None:
            continue
        found += 1
        points = masker.landmarks(image, box)
        t3 = time.perf_counter()
        matrix = similarity_from_eyes(*eye_centres(points), masker.config.template)
        aligned, _ = warp(image, matrix, 128)
        mask = hull_mask(transform_points(matrix, points), 128)
        t4 = time.perf_counter()
        encode_png(aligned), encode_png(mask * 255)
        t5 = time.perf_counter()
        totals["landmarks"] += t3 - t2
        totals["align_mask"] += t4 - t3
        totals["png_encode"] += t5 - t4
    return {k: 1000 * v / len(paths) for k, v in totals.items()} | {"faces_found": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="LFW-layout image folder")
    parser.add_argument("--dataset", default="lfw", help="dataset adapter for --root")
    parser.add_argument("--limit", type=int, default=1000, help="images to time")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="workers for the parallel run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocess.json"), help="JSON report")
    args = parser.parse_args()

    table = load_dataset(args.dataset, args.root).sample(frac=1.0, random_state=0).head(args.limit)
    stages = stage_times(table["path"].tolist())
    runs = {}
    for workers in sorted({1, args.workers}):
        with tempfile.TemporaryDirectory() as tmp:
            summary = preprocess(table, tmp, workers=workers, progress=False)
        runs[workers] = {
            "images_per_second": round(summary.images_per_second, 1),
            "images_per_second_per_core": round(summary.images_per_second / workers, 1),
            "status_counts": summary.status_counts,
        }
    report = {
        "images": len(table),
        "root": str(args.root),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "stage_ms_per_image": {k: round(v, 3) for k, v in stages.items()},
        "end_to_end": runs,
        "note": "end to end = decode, HOG detect, 68 landmarks, align, mask, PNG encode and Parquet write",
    }
    print(f"{'stage':<12} ms/image")
    for name, ms in report["stage_ms_per_image"].items():
        print(f"{name:<12} {ms}")
    for workers, run in runs.items():
        print(f"workers={workers}: {run['images_per_second']} img/s ({run['images_per_second_per_core']} per core)")
    write_record(args.out, report)


if __name__ == "__main__":
    main()

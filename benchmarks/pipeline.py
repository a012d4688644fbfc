"""Throughput of ``augmentor run`` (Ray Data) against a naive one-image-at-a-time loop over the same images.

    python benchmarks/pipeline.py                                        # 300 CelebA images, default-width model
    python benchmarks/pipeline.py --model runs/00003-cascade-cascade/checkpoint --limit 1000
    python benchmarks/pipeline.py --model-widths tiny --limit 100        # a quick check

Both do the same work per image: read, detect, align, mask, hallucinate, match score (dlib-ResNet descriptors of
the output and the aligned original), PNG encode, atomic write, and a Parquet manifest at the end. The naive loop
runs in this process, with torch's default threads (one per core) and with one thread; the speedup is against the
faster of the two. The pipeline starts its own local Ray. Pipeline img/s exclude
the Ray start-up (reported apart) but include starting the actors and loading the models in them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from record import write_record

from augmentor.datasets.adapters import load_dataset
from augmentor.models import DEFAULT_WIDTHS, RESOLUTIONS, Cascade, CascadeConfig
from augmentor.precision import PRECISIONS, resolve_precision
from augmentor.training.checkpoints import save_generator

TINY_WIDTHS = {r: 4 for r in (4, *RESOLUTIONS)}  # tests/conftest.py tiny_widths


def naive_loop(paths: list[str], image_ids: list[str], model: Path, out: Path, precision: str) -> dict:
    """read -> mask -> hallucinate -> score -> write, one image at a time; models loaded before the clock starts.

    ``precision`` (fp32 or bf16) applies to the cascade and the descriptor, as in the pipeline's Predictor.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from augmentor.evaluation.metrics import FaceDescriptor, pearson, to_tensor
    from augmentor.faces import FaceMasker
    from augmentor.hallucinator import Hallucinator
    from augmentor.precision import autocast
    from pipelines.stages import encode_image, noise_seed

    start = time.perf_counter()
    masker, descriptor = FaceMasker(), FaceDescriptor()
    hal = Hallucinator.from_pretrained(model, device="cpu", precision=precision)
    load_seconds = time.perf_counter() - start
    seconds = dict.fromkeys(("mask", "hallucinate", "write"), 0.0)
    rows = []
    start = time.perf_counter()
    for i, (path, image_id) in enumerate(zip(paths, image_ids, strict=True)):
        t0 = time.perf_counter()
        face = masker(path)
        t1 = time.perf_counter()
        score, output = None, None
        if face.ok:
            with torch.inference_mode():
                image = hal(face.masked[None], face.mask[None], seeds=[noise_seed(image_id, 0)])
                with autocast(precision, "cpu"):
                    output, original = descriptor(to_tensor(image)), descriptor(to_tensor(face.aligned[None]))
                score = float(pearson(output.float(), original.float())[0])
        t2 = time.perf_counter()
        if face.ok:
            output = out / f"{i:06d}_hal0.png"
            tmp = out / f".{output.name}.tmp"
            tmp.write_bytes(encode_image(image[0], "png"))
            os.replace(tmp, output)
        rows.append({"image_id": image_id, "status": face.status.value, "output": str(output), "score": score})
        t3 = time.perf_counter()
        seconds["mask"] += t1 - t0
        seconds["hallucinate"] += t2 - t1
        seconds["write"] += t3 - t2
    pq.write_table(pa.Table.from_pylist(rows), out / "manifest.parquet")
    total = time.perf_counter() - start
    return {
        "images": len(paths),
        "seconds": round(total, 2),
        "images_per_second": round(len(paths) / total, 2),
        "model_load_seconds": round(load_seconds, 2),
        "images_per_second_with_model_load": round(len(paths) / (total + load_seconds), 2),
        "torch_threads": torch.get_num_threads(),
        "stage_images_per_second": {k: round(len(paths) / v, 1) for k, v in seconds.items()},
    }


def pipeline_run(table, model: Path, out: Path, workers: int | None, batch_size: int | None, precision: str) -> dict:
    from pipelines.augment import format_summary, run
    from pipelines.plan import RunSettings

    settings = RunSettings(
        out=out, model=model, workers=workers, batch_size=batch_size, progress=False, precision=precision
    )
    start = time.perf_counter()
    summary = run(table, settings)
    wall = time.perf_counter() - start
    print(format_summary(summary))
    return {
        "images": summary.processed,
        "seconds": round(summary.seconds, 2),
        "ray_startup_seconds": round(summary.startup_seconds, 2),
        "images_per_second": round(summary.images_per_second, 2),
        "images_per_second_with_startup": round(summary.processed / wall, 2),
        "steady_images_per_second": round(summary.steady_images_per_second, 2),
        "status_counts": summary.status_counts,
        "plan": summary.plan.__dict__ if summary.plan else None,
        "stages": {
            name: {
                "busy_seconds": round(s.busy_s, 2),
                "actors": s.actors,
                "images_per_second_per_actor": round(s.per_actor, 1),
                "images_per_second": round(s.rate, 1),
            }
            for name, s in summary.stages.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/celeba/images"), help="image folder")
    parser.add_argument("--dataset", default="folder", help="dataset adapter for --root")
    parser.add_argument("--limit", type=int, default=300, help="images (the first of the sorted listing)")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder; default: a random one")
    parser.add_argument("--model-widths", choices=["default", "tiny"], default="default", help="random model widths")
    parser.add_argument("--workers", type=int, default=None, help="pipeline actors per stage (default: one per CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="pipeline batch size (default: 16 on CPU)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="of both contenders (auto: bf16 on CPUs with native bf16, as `augmentor run` does)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline.json"), help="JSON report")
    args = parser.parse_args()

    precision = resolve_precision(args.precision, "cpu")
    table = load_dataset(args.dataset, args.root).head(args.limit)
    for path in table["path"]:  # the same warm page cache for both contenders
        Path(path).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            widths = DEFAULT_WIDTHS if args.model_widths == "default" else TINY_WIDTHS
            model = save_generator(Cascade(CascadeConfig(widths=dict(widths))), Path(tmp) / "model")
        load = os.getloadavg()
        naive = {}
        default_threads = torch.get_num_threads()
        for threads in sorted({default_threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            naive_out = Path(tmp) / f"naive{threads}"
            naive_out.mkdir()
            naive[f"{threads}_threads"] = naive_loop(
                table["path"].tolist(), table["image_id"].tolist(), model, naive_out, precision
            )
        torch.set_num_threads(default_threads)
        pipe = pipeline_run(table, model, Path(tmp) / "pipeline", args.workers, args.batch_size, precision)
    best = max(naive.values(), key=lambda r: r["images_per_second"])
    report = {
        "images": len(table),
        "root": str(args.root),
        "model": str(args.model) if args.model else f"random, {args.model_widths} widths",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpus": 0},
        "precision": precision,
        "load_average_at_start": [round(x, 2) for x in load],
        "naive_loop": naive,
        "pipeline": pipe,
        "speedup": round(pipe["images_per_second"] / best["images_per_second"], 2),
        "speedup_whole_job": round(
            pipe["images_per_second_with_startup"] / best["images_per_second_with_model_load"], 2
        ),
        "speedup_steady_state": round(pipe["steady_images_per_second"] / best["images_per_second"], 2),
        "note": (
            "speedups are against the faster naive loop (torch's default is one thread per core). speedup: pipeline "
            "without Ray start-up vs naive without model loading; whole job: both included; steady state: pipeline "
            "from its first written batch on"
        ),
    }
    if torch.cuda.is_available():
        report["machine"]["gpus"] = torch.cuda.device_count()
    print(f"\n{'':<28}{'img/s':>8}")
    for name, run in naive.items():
        print(f"{'naive loop, ' + name.replace('_', ' '):<28}{run['images_per_second']:>8.2f}")
    for name, stage in pipe["stages"].items():
        print(f"{'pipeline ' + name + ' stage':<28}{stage['images_per_second']:>8.2f}")
    print(
        f"{'pipeline end to end':<28}{pipe['images_per_second']:>8.2f}   ({report['speedup']}x the faster naive loop)"
    )
    print(
        f"{'  with Ray start-up':<28}{pipe['images_per_second_with_startup']:>8.2f}   ({report['speedup_whole_job']}x "
        "the naive loop with its model loading)"
    )
    print(f"{'  steady state':<28}{pipe['steady_images_per_second']:>8.2f}   ({report['speedup_steady_state']}x)")
    write_record(args.out, report)


if __name__ == "__main__":
    main()

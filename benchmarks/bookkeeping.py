"""The driver's bookkeeping of ``augmentor run`` at CASIA-WebFace size: time and peak memory of each step.

    python benchmarks/bookkeeping.py                         # 500k images, crash at 400k
    python benchmarks/bookkeeping.py --rows 20000 --crash-at 16000 --out benchmarks/results/bookkeeping_20k.json

A synthetic CASIA tree (``<identity>/<nnn>.jpg``, 47 images an identity, as in CASIA's 494k over 10.6k identities)
of hard links to a few LFW fixtures and a faceless image, and a ``list`` file over it that also names files not on
disk. The masking and hallucinating stages are replaced by trivial ones (every row ``no_face``, nothing decoded,
no image written; the manifest parts are written by the real ``write_batch``), so what is measured is the driver:

1. listing: ``load_dataset("casia")`` (a scan of the tree) and ``load_dataset("list")`` (the file + one directory
   listing per folder);
2. planning: ``prepare`` on a fresh output folder (labels, output names, the on-disk check);
3. a crash at ``--crash-at`` rows: the manifest parts a killed run leaves, one per batch of 16, written as the
   workers write them (their time is reported apart) and merged every ``MERGE_EVERY_ROWS`` as the driver does
   (``merge_parts``, each merge timed), killed just before a merge;
4. the resumed run, ``pipelines.augment.run`` itself, with each of its steps timed: the resume scan (``prepare``
   again, reading every part), recording the missing files, the Ray job over the rows left (trivial stages, a
   local Ray; its merges timed apart), the manifest merge (``consolidate``) and the completeness check.

The whole listing is held by the driver throughout, as in ``augmentor run``, which also imports torch there (the
checkpoint check): the first step's RSS is mostly that.

Peak RSS is the driver's own (``VmHWM``, reset before each step through ``/proc/self/clear_refs``), so it includes
what earlier steps still hold; Ray's worker processes are not counted.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from record import write_record

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "lfw"
IMAGES_PER_IDENTITY = 47
PART_ROWS = 16  # rows per manifest part: the CPU default batch size


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


class Steps:
    """Seconds and the driver's peak RSS of each named step, in order."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.nested: list[dict] = []  # calls made inside a measured step (the merges during the Ray job)
        self.depth = 0

    def measure(self, name: str, fn: Callable, *args, **kwargs):
        if self.depth:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            self.nested.append({"step": name, "seconds": round(time.perf_counter() - start, 3)})  # in a thread: wall
            return result
        self.depth += 1
        try:
            return self._measure(name, fn, *args, **kwargs)
        finally:
            self.depth -= 1

    def _measure(self, name: str, fn: Callable, *args, **kwargs):
        _reset_peak()
        start, cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = round(_rss_mb("VmHWM"), 1)
        self.rows.append(
            {"step": name, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mb": peak}
        )
        print(f"  {name:<46} {seconds:>8.2f} s {cpu:>8.2f} s {peak:>9.0f} MB", flush=True)
        return result

    def wrap(self, module, name: str, label: str) -> None:
        """Time every call of ``module.name`` as step ``label``."""
        fn = getattr(module, name)
        setattr(module, name, lambda *a, **k: self.measure(label, fn, *a, **k))


class TrivialMask:
    """Stands in for ``MaskStage``: every row ``no_face``, the file never opened."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["path"])
        return {
            **batch,
            "status": np.full(n, "no_face", dtype=object),
            "reason": np.full(n, "no_face: trivial stage of the bookkeeping benchmark", dtype=object),
            "mask_area": np.full(n, np.nan, np.float32),
            "mask_s": np.zeros(n),
        }


class TrivialPredictAndWrite:
    """Stands in for ``PredictAndWrite``: one row per copy left, then the real ``write_batch`` (parts only)."""

    def __init__(self, out_dir: str, image_format: str, model_id: str, copies: int = 1, seed: int = 0, **_) -> None:
        self.writer = {"out_dir": out_dir, "image_format": image_format, "model_id": model_id}
        self.copies, self.seed = copies, seed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pipelines.stages import PASS_THROUGH, copies_of, noise_seed, write_batch

        rows, ks = copies_of(batch["todo"], self.copies)
        ids = [str(batch["image_id"][i]) for i in rows]
        out = {name: np.asarray(batch[name])[rows] for name in PASS_THROUGH}
        out.update(
            copy=ks,
            seed=np.asarray([noise_seed(i, int(k), self.seed) for i, k in zip(ids, ks, strict=True)], np.int64),
            match_score=np.full(len(rows), np.nan, np.float32),
            mask_s=np.zeros(len(rows)),
            hallucinate_s=np.zeros(len(rows)),
        )
        return write_batch(out, **self.writer)


def make_tree(work: Path, rows: int, missing: int) -> tuple[Path, Path]:
    """The CASIA-like tree of hard links and a ``list`` TSV over it plus ``missing`` files not on disk."""
    from PIL import Image

    sources = sorted(FIXTURES.glob("*.jpg"))
    blank = work / "no_face.jpg"
    Image.new("RGB", (250, 250), (90, 120, 150)).save(blank)  # no face: every 10th image
    sources = [blank, *sources[:9]]
    root = work / "casia"
    paths, identities = [], []
    for i in range(rows):
        identity = f"{i // IMAGES_PER_IDENTITY:07d}"
        if i % IMAGES_PER_IDENTITY == 0:
            (root / identity).mkdir(parents=True)
        name = f"{identity}/{i % IMAGES_PER_IDENTITY + 1:03d}.jpg"
        os.link(sources[i % len(sources)], root / name)
        paths.append(name)
        identities.append(identity)
    for i in range(missing):  # listed in existing identity folders, not on disk
        identity = f"{i * 7 % (rows // IMAGES_PER_IDENTITY):07d}"
        paths.append(f"{identity}/gone_{i:04d}.jpg")
        identities.append(identity)
    listing = root / "casia.tsv"  # a file in the root is ignored by the casia adapter
    listing.write_text("path\tidentity\n" + "".join(f"{p}\t{i}\n" for p, i in zip(paths, identities, strict=True)))
    return root, listing


def crash(prepared, out: Path, rows: int, model_id: str) -> list[float]:
    """What a run killed after ``rows`` rows leaves: one part per batch of :data:`PART_ROWS`, merged every
    ``MERGE_EVERY_ROWS`` rows as the driver does, killed just before a merge (the most parts left). Returns the
    seconds of each merge."""
    from augmentor.manifest import merge_parts
    from pipelines import augment
    from pipelines.plan import check_run_file

    check_run_file(out, prepared.info)
    todo = prepared.todo.iloc[:rows]
    writer = TrivialPredictAndWrite(str(out), "png", model_id)
    mask = TrivialMask()
    merges, unmerged = [], 0
    for start in range(0, len(todo), PART_ROWS):
        if unmerged >= augment.MERGE_EVERY_ROWS:
            begin = time.perf_counter()
            merge_parts(out)
            merges.append(round(time.perf_counter() - begin, 3))
            unmerged = 0
        frame = todo.iloc[start : start + PART_ROWS]
        writer(mask({name: frame[name].to_numpy() for name in frame.columns}))
        unmerged += len(frame)
    return merges


def ray_blocks(todo) -> int:
    """What a fresh run's driver does before the first batch: split the listing and hand it to Ray Data."""
    import ray

    from pipelines.augment import blocks

    return ray.data.from_pandas(blocks(todo)).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000, help="images on disk")
    parser.add_argument("--crash-at", type=int, default=400_000, help="rows in the manifest when the run is killed")
    parser.add_argument("--missing", type=int, default=1_000, help="listed files not on disk")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--merge-every", type=int, default=None, help="rows between merges (default: the run's)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--job-rows",
        type=int,
        default=256,
        help="rows per Ray block and batch of the resumed job (not what is measured)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bookkeeping.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from augmentor.datasets.adapters import load_dataset
    from augmentor.hallucinator import DEFAULT_WEIGHTS
    from augmentor.manifest import part_paths
    from pipelines import augment
    from pipelines.plan import RunSettings, prepare

    if args.merge_every:
        augment.MERGE_EVERY_ROWS = args.merge_every
    work = Path(tempfile.mkdtemp(prefix="bookkeeping-", dir=args.work))
    steps = Steps()
    report: dict = {"rows": args.rows, "crash_at": args.crash_at, "missing": args.missing}
    report["merge_every_rows"] = augment.MERGE_EVERY_ROWS
    report["job_rows_per_block"] = args.job_rows
    try:
        print(f"{args.rows} images + {args.missing} missing files in {work}", flush=True)
        start = time.perf_counter()
        root, listing_file = make_tree(work, args.rows, args.missing)
        report["setup_seconds"] = round(time.perf_counter() - start, 1)
        print(f"  tree and list file made in {report['setup_seconds']} s (not bookkeeping)")
        print(f"  {'step':<46} {'wall':>10} {'CPU':>10} {'peak RSS':>12}")
        steps.measure("listing: casia adapter (scan)", load_dataset, "casia", root)
        table = steps.measure("listing: list adapter (file + on-disk check)", load_dataset, "list", listing_file)
        settings = RunSettings(out=work / "out", model=DEFAULT_WEIGHTS, progress=False, workers=1, batch_size=PART_ROWS)
        prepared = steps.measure("planning: prepare, fresh folder", prepare, table, settings)
        start = time.perf_counter()
        merges = crash(prepared, settings.out, args.crash_at, prepared.info["model_id"])
        report["crash_parts_seconds"] = round(time.perf_counter() - start, 1)
        report["crash_merges_seconds"] = merges
        report["crash_parts_left"] = len(part_paths(settings.out))
        print(f"  {args.crash_at} rows written as parts in {report['crash_parts_seconds']} s (the workers' time), "
              f"{len(merges)} merges on the way (the driver's: {sum(merges):.1f} s, at most {max(merges, default=0):.1f} s "
              f"each), {report['crash_parts_left']} parts left by the crash")  # fmt: skip
        fresh_todo = prepared.todo  # for the block step below
        del prepared

        steps.wrap(augment, "prepare", "resume: prepare (reads every part)")
        steps.wrap(augment, "record_missing", "resume: record the missing files")
        steps.wrap(augment, "_execute", "resume: Ray job over the rows left (trivial)")
        steps.wrap(augment, "merge_parts", "merge the parts (during the Ray job)")
        steps.wrap(augment, "consolidate", "merge: consolidate into manifest.parquet")
        steps.wrap(augment, "_check_complete", "merge: check every listed row is there")
        augment.MaskStage, augment.PredictAndWrite = TrivialMask, TrivialPredictAndWrite
        # Bigger blocks for the job itself, which is not what is measured: on 2 shared cores Ray Data moves about
        # 300 blocks of 16 rows a second, and the parts from the crash stay at 16 rows.
        block_rows = augment.ROWS_PER_BLOCK
        augment.ROWS_PER_BLOCK = augment.MASK_BATCH = settings.batch_size = args.job_rows
        _reset_peak()
        start = time.perf_counter()
        summary = augment.run(table, settings)
        augment.ROWS_PER_BLOCK = block_rows
        report["resumed_run_seconds"] = round(time.perf_counter() - start, 1)
        report["resumed_run_peak_rss_mb"] = round(_rss_mb("VmHWM"), 1)
        print(f"  {'augment.run, whole (Ray start-up included)':<46} {report['resumed_run_seconds']:>8.1f} s "
              f"{'':>10} {report['resumed_run_peak_rss_mb']:>9.0f} MB")  # fmt: skip
        report["manifest_rows"] = summary.manifest_rows
        report["status_counts"] = summary.status_counts
        report["ray_startup_seconds"] = round(summary.startup_seconds, 1)
        report["rows_made_by_ray"] = summary.processed
        import ray

        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            steps.measure(f"fresh run: {len(fresh_todo)} rows into Ray blocks", ray_blocks, fresh_todo)
        finally:
            ray.shutdown()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["steps"] = steps.rows
    report["merges_during_the_ray_job"] = steps.nested
    bookkeeping = [s for s in steps.rows if s["step"].startswith(("listing: list", "planning", "resume:", "merge:"))]
    bookkeeping = [s for s in bookkeeping if "Ray job" not in s["step"]]
    report["bookkeeping_seconds"] = round(sum(s["seconds"] for s in bookkeeping), 1)
    report["bookkeeping_cpu_seconds"] = round(sum(s["cpu_seconds"] for s in bookkeeping), 1)
    report["peak_rss_mb"] = max(s["peak_rss_mb"] for s in steps.rows)
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    report["load_average_at_end"] = os.getloadavg()  # the machine may be shared: wall times stretch with the load
    print(
        f"bookkeeping (list listing, planning, resume scan, missing rows, merge, check): "
        f"{report['bookkeeping_seconds']} s wall, {report['bookkeeping_cpu_seconds']} s CPU; "
        f"driver peak RSS {report['peak_rss_mb']:.0f} MB; "
        f"manifest {report['manifest_rows']} rows {report['status_counts']}"
    )
    write_record(args.out, report)


if __name__ == "__main__":
    main()

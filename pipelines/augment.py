"""``augmentor run``: hallucinate backgrounds for a whole dataset with Ray Data. The only module that imports Ray.

::

    listing ──> MaskStage (CPU actors) ──> Predictor (GPU or CPU actors) ──> write_batch (tasks) ──> driver
    (pandas)    decode, detect, align,     hallucinate K copies, match       images + manifest      progress,
                mask                       score                             part, atomically       consolidation

Without GPUs the hallucinating actors write their own batches (:class:`~pipelines.stages.PredictAndWrite`), which
spares Ray a pool of write workers; the write stage is still timed on its own.

A rerun with the same output folder skips every ``(image_id, copy)`` already in the manifest; see
``docs/pipeline.md`` for the resume semantics and multi-node use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from augmentor.errors import InputError
from augmentor.locking import output_lock
from augmentor.manifest import MANIFEST_FILE, PARTS_DIR, consolidate, merge_parts, remove_temporary, write_part
from pipelines.donor import DonorPredictAndWrite, DonorPredictor
from pipelines.plan import ResourcePlan, RunSettings, check_run_file, count_rows, plan_resources, prepare
from pipelines.stages import STAGING_DIR, MaskStage, PredictAndWrite, Predictor, copies_of, noise_seed, write_batch

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
MASK_BATCH = 8  # images per masking call: small, so work spreads over the actors
ROWS_PER_BLOCK = 16  # listing rows per Ray block
MAX_BLOCKS = 1_000  # Ray Data spends ~4 ms of driver CPU a block (from_pandas): 20k blocks cost 82 s at 500k rows
STAGES = ("mask", "hallucinate", "write")
MIN_STEADY_SECONDS = 1.0  # the summary shows a steady-state rate only over at least this long
MISSING = "missing"  # manifest status of a listed file not on disk
MISSING_REASON = "missing: listed, but not on disk when the run was planned"
MISSING_PART_ROWS = 4096  # rows per manifest part of missing files
MERGE_EVERY_ROWS = 10_000  # the driver merges the parts written since the last merge every this many rows


class JobFailedError(RuntimeError):
    """The Ray job failed, or finished without every row; a rerun with the same output folder continues."""


@dataclass
class StageStats:
    """Rows through one stage and the seconds its UDFs were busy (summed over actors)."""

    rows: int = 0
    busy_s: float = 0.0
    actors: int | None = None  # None for task stages

    @property
    def per_actor(self) -> float:
        return self.rows / self.busy_s if self.busy_s > 0 else 0.0

    @property
    def rate(self) -> float:
        """Images per second with every actor busy."""
        return self.per_actor * (self.actors or 1)


@dataclass
class RunSummary:
    """Counts over the output folder's manifest and this run's speed. Rates count output images (image x copy)."""

    out: str
    images: int  # input images in the listing
    copies: int
    skipped: int  # image x copy rows already done by earlier runs
    processed: int = 0  # rows made by this run
    missing: int = 0  # rows this run recorded as missing (listed file not on disk), not counted in processed
    seconds: float = 0.0  # wall time from building the Ray dataset to the consolidated manifest
    steady_seconds: float = 0.0  # from the first written batch to the last one: the rate once every actor is up
    steady_rows: int = 0  # rows written after the first batch
    startup_seconds: float = 0.0  # connecting to or starting Ray
    manifest_rows: int = 0  # rows in manifest.parquet, earlier runs and other --limit values included
    status_counts: dict[str, int] = field(default_factory=dict)
    reason_counts: dict[str, int] = field(default_factory=dict)
    stages: dict[str, StageStats] = field(default_factory=dict)
    plan: ResourcePlan | None = None

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float:
        """End-to-end rate without the start-up (workers, imports, model loading): what large runs approach."""
        return self.steady_rows / self.steady_seconds if self.steady_seconds > 0 else 0.0


def run(
    table: pd.DataFrame, settings: RunSettings, limit: int | None = None, extra: dict[str, Any] | None = None
) -> RunSummary:
    """Hallucinate ``settings.copies`` backgrounds for every face of a listing; write images and the manifest.

    Args:
        table: A :func:`augmentor.datasets.adapters.load_dataset` listing.
        settings: See :class:`RunSettings`.
        limit: Only the first ``limit`` rows (labels and file names still come from the whole listing).
        extra: More fields for ``run.json`` (the CLI records the dataset and root).

    Raises:
        FileNotFoundError, ValueError: bad input (see :func:`prepare`).
        JobFailedError: the Ray job failed or left rows out; what was written is kept, and a rerun continues.
        augmentor.locking.FolderInUseError: another process is writing to ``settings.out``.
    """
    with output_lock(settings.out, "augmentor run"):  # a second run on the folder is refused, not run twice
        return _run(table, settings, limit, extra)


def _run(table: pd.DataFrame, settings: RunSettings, limit: int | None, extra: dict[str, Any] | None) -> RunSummary:
    """:func:`run`, holding the output folder's lock."""
    prepared = prepare(table, settings, limit, extra)
    out = settings.out
    check_run_file(out, {**prepared.info, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    remove_temporary(out)
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)  # images a killed run had not renamed yet
    todo = prepared.todo
    listing_rows = len(prepared.listing) * settings.copies
    summary = RunSummary(
        out=str(out), images=len(prepared.listing), copies=settings.copies, skipped=listing_rows - prepared.rows_todo
    )
    summary.missing = record_missing(prepared.missing, settings, prepared.info["model_id"])
    if len(todo):
        if settings.method == "donor":
            _build_bank(settings)
        start = time.perf_counter()
        started = _connect(settings)
        try:
            summary.plan = _plan(settings)
            summary.startup_seconds = time.perf_counter() - start
            start = time.perf_counter()
            _execute(todo, summary, settings, prepared.info["model_id"])
            summary.seconds = time.perf_counter() - start
        finally:
            if started:
                import ray

                ray.shutdown()
    start = time.perf_counter()
    manifest = consolidate(out).select(["image_id", "copy", "status", "reason"]).to_pandas()
    summary.seconds += time.perf_counter() - start
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):
        (out / PARTS_DIR).rmdir()  # empty once consolidated
    _check_complete(prepared.listing, manifest, settings.copies)
    summary.manifest_rows = len(manifest)
    summary.status_counts = dict(Counter(manifest["status"]))
    summary.reason_counts = dict(Counter(r.split(":", 1)[0] for r in manifest["reason"] if r))
    report = {**asdict(summary), "images_per_second": summary.images_per_second}
    (out / SUMMARY_FILE).write_text(json.dumps(report, indent=2))
    return summary


def record_missing(missing: pd.DataFrame, settings: RunSettings, weights_id: str) -> int:
    """Write the manifest rows, status ``missing``, of listed files that are not on disk; returns how many rows.

    The driver writes them, as parts of :data:`MISSING_PART_ROWS` rows, so that no Ray work is spent on them and the
    manifest still accounts for every listed input.
    """
    rows, ks = copies_of(missing["todo"].to_numpy(), settings.copies)
    for start in range(0, len(rows), MISSING_PART_ROWS):
        part, k = missing.iloc[rows[start : start + MISSING_PART_ROWS]], ks[start : start + MISSING_PART_ROWS]
        n = len(part)
        image_ids = part["image_id"].tolist()
        write_part(
            {
                "image_id": image_ids,
                "identity": part["identity"].tolist(),
                "label": part["label"].tolist(),
                "copy": k.tolist(),
                "source_path": part["path"].tolist(),
                "output_path": [None] * n,
                "status": [MISSING] * n,
                "reason": [MISSING_REASON] * n,
                "model_id": [weights_id] * n,
                "seed": [noise_seed(i, int(c), settings.seed) for i, c in zip(image_ids, k, strict=True)],
                "mask_area": [None] * n,
                "match_score": [None] * n,
            },
            settings.out,
        )
    if len(rows):
        log.warning("%d listed file(s) not on disk: %d manifest row(s) with status missing", len(missing), len(rows))
    return len(rows)


def _check_complete(listing: pd.DataFrame, manifest: pd.DataFrame, copies: int) -> None:
    """Every listed image x copy is in the manifest (whose keys are unique)."""
    found = manifest.loc[manifest["copy"].between(0, copies - 1), "image_id"].value_counts()
    missing = int(copies * len(listing) - listing["image_id"].map(found).fillna(0).sum())
    if missing:
        raise JobFailedError(f"{missing} image x copy rows are missing from the manifest; rerun to complete it")


def _build_bank(settings: RunSettings) -> None:
    """Build and save the donor bank here, once, so that every actor only reads it."""
    from augmentor.donors import DonorBank

    bank = DonorBank.load(settings.donors)
    if len(bank) <= settings.copies:
        raise InputError(f"--copies {settings.copies} needs more donors than the {len(bank)} of {settings.donors}")
    log.info("donor bank %s: %d donors (%s)", bank.id, len(bank), "built" if bank.built else "reused")


def _connect(settings: RunSettings) -> bool:
    """Connect to ``settings.address`` or start a quiet local Ray; False if Ray was already up (left running)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if settings.address:
        ray.init(address=settings.address, **quiet)
    else:
        # "local": a new Ray even where `ray start` (or a test's Cluster) left an address to join on this machine;
        # it finds the GPUs itself, and --num-gpus is checked against them
        ray.init(address="local", include_dashboard=False, **quiet)
    return True


def _plan(settings: RunSettings) -> ResourcePlan:
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    nodes = sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0)
    num_gpus = gpus if settings.num_gpus is None else settings.num_gpus
    if settings.method == "donor":
        num_gpus = 0  # composition is numpy on the CPU; a GPU would only score
    if num_gpus > gpus:
        raise InputError(f"--num-gpus {num_gpus}, but the Ray cluster has {gpus} GPU(s)")
    # precision auto is resolved here, on the driver's machine
    plan = plan_resources(cpus, num_gpus, settings.workers, settings.batch_size, settings.precision, nodes)
    log.info("resource plan on %g CPUs, %d GPUs, %d node(s) with CPUs: %s", cpus, gpus, nodes, plan)
    return plan


def _execute(todo: pd.DataFrame, summary: RunSummary, settings: RunSettings, weights_id: str) -> None:
    """Build and drain the Ray Data pipeline, filling in the rows written and the timings of ``summary``."""
    import ray
    from tqdm import tqdm

    plan = summary.plan
    summary.stages = {
        "mask": StageStats(actors=plan.mask_actors),
        "hallucinate": StageStats(actors=plan.predictor_actors),
        "write": StageStats(actors=plan.predictor_actors if plan.fused_write else None),
    }
    bar = tqdm(total=count_rows(todo), unit="img", desc="augment", disable=not settings.progress)
    try:
        with _quiet_ray_data():
            _drain(_dataset(todo, settings, plan, weights_id), summary, settings.out, bar)
    except ray.exceptions.RayError as exc:
        if not resumable(exc):
            raise  # a stage's own code failed (a bug, a shape error): its worker traceback is in the message
        message = str(exc).strip().splitlines()[0][:500]
        raise JobFailedError(f"the Ray job failed ({type(exc).__name__}: {message}); rerun to resume") from exc
    finally:
        bar.close()


def resumable(exc: BaseException) -> bool:
    """Whether a Ray error is one a rerun gets past: Ray lost a node, a worker, an actor or an object (or killed a
    worker for memory), or a stage refused its input. An error raised by a stage's own code otherwise is a bug."""
    import ray

    if isinstance(exc, (ray.exceptions.RayTaskError, ray.exceptions.UserCodeException)):
        return isinstance(getattr(exc, "cause", None), InputError)
    return True


@contextlib.contextmanager
def _quiet_ray_data():
    """No Ray Data progress bars or console logs (its session log file keeps everything); restored on exit."""
    from ray.data import DataContext

    context = DataContext.get_current()
    quiet = {"enable_progress_bars": False, "print_on_execution_start": False, "enable_auto_log_stats": False}
    saved = {name: getattr(context, name) for name in quiet}
    consoles = [(h, h.level) for h in logging.getLogger("ray.data").handlers if not isinstance(h, logging.FileHandler)]
    try:
        for name, value in quiet.items():
            setattr(context, name, value)
        for handler, _ in consoles:
            handler.setLevel(logging.ERROR)
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for handler, level in consoles:
            handler.setLevel(level)


def _dataset(todo: pd.DataFrame, settings: RunSettings, plan: ResourcePlan, weights_id: str):
    """The lazy Ray dataset: masking actors, hallucinating actors, and write tasks unless the actors write."""
    import ray
    from ray.data import ActorPoolStrategy

    ds = ray.data.from_pandas(blocks(todo))
    ds = ds.map_batches(
        MaskStage,
        batch_size=MASK_BATCH,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=plan.mask_actors),
        num_cpus=plan.mask_cpus,
    )
    writer = {"out_dir": str(settings.out.resolve()), "image_format": settings.image_format, "model_id": weights_id}
    predictor = {
        "copies": settings.copies,
        "device": plan.device,
        "batch_size": plan.batch_size,
        "num_threads": plan.torch_threads,
        "precision": plan.precision,
    }
    if settings.method == "donor":
        predictor.update(donors=str(settings.donors.resolve()), refine=settings.refine)
        stages = (DonorPredictAndWrite, DonorPredictor)
    else:
        predictor.update(model=str(settings.model.resolve()), seed=settings.seed)
        stages = (PredictAndWrite, Predictor)
    ds = ds.map_batches(
        stages[0] if plan.fused_write else stages[1],
        batch_size=plan.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=plan.predictor_actors),
        num_cpus=plan.predictor_cpus,
        num_gpus=plan.predictor_gpus,
        fn_constructor_kwargs={**predictor, **writer} if plan.fused_write else predictor,
    )
    if not plan.fused_write:
        ds = ds.map_batches(
            write_batch, batch_size=None, batch_format="numpy", num_cpus=plan.write_cpus, fn_kwargs=writer
        )
    return ds


def _drain(ds, summary: RunSummary, out: Path, bar) -> None:
    """Pull the written batches through, counting rows and stage times; merge the manifest parts on the side."""
    stats = summary.stages
    merger = ThreadPoolExecutor(1, thread_name_prefix="merge_parts")  # merges while the loop drains Ray's output
    merging: Future | None = None
    try:
        start, first, unmerged = time.perf_counter(), None, 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = len(batch["image_id"])
            unmerged += rows
            if unmerged >= MERGE_EVERY_ROWS and (merging is None or merging.done()):
                if merging is not None:
                    merging.result()  # raises what the last merge raised
                merging, unmerged = merger.submit(merge_parts, out), 0  # these rows' parts are written
            for name in STAGES:
                stats[name].rows += len(batch[f"{name}_s"])
                stats[name].busy_s += float(batch[f"{name}_s"].sum())
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                summary.steady_rows += rows
                summary.steady_seconds = now - first
            summary.processed += rows
            bar.update(rows)
            rates = " ".join(f"{name}={stats[name].rate:.1f}" for name in STAGES)
            bar.set_postfix_str(f"{rates} end-to-end={summary.processed / (now - start):.1f} img/s")
        if merging is not None:
            merging.result()
    finally:
        merger.shutdown(wait=True)


def blocks(todo: pd.DataFrame) -> list[pd.DataFrame]:
    """The listing as one frame per Ray block: :data:`ROWS_PER_BLOCK` rows each, more past :data:`MAX_BLOCKS` blocks.

    Split here: ``from_pandas(override_num_blocks=)`` uses ``np.array_split``, which returns bare arrays under pandas 3.
    """
    rows_per_block = max(ROWS_PER_BLOCK, math.ceil(len(todo) / MAX_BLOCKS))
    return [todo.iloc[i : i + rows_per_block].reset_index(drop=True) for i in range(0, len(todo), rows_per_block)]


def format_summary(summary: RunSummary) -> str:
    """The end-of-run report: counts, then a table of per-stage and end-to-end throughput."""
    counts = summary.status_counts
    lines = [
        (
            f"{summary.images} images x {summary.copies} copies in {summary.out}: {counts.get('ok', 0)} ok, "
            f"{counts.get('no_face', 0)} no face, {counts.get('error', 0)} errors"
            f"{f', {counts[MISSING]} missing' if counts.get(MISSING) else ''} in the manifest "
            f"({summary.skipped} already done, {summary.processed} made in {summary.seconds:.1f} s "
            f"+ {summary.startup_seconds:.1f} s Ray start-up)"
        )
    ]
    lines += [f"  {reason}: {count}" for reason, count in sorted(summary.reason_counts.items())]
    if summary.plan is not None:
        plan = summary.plan
        lines.append(
            f"plan: {plan.mask_actors} masking actor(s), {plan.predictor_actors} {plan.device} hallucinating "
            f"actor(s) in {plan.precision}, batch {plan.batch_size}"
        )
    if summary.stages:
        lines.append(f"{'stage':<12} {'images':>7} {'busy s':>8} {'actors':>6} {'img/s/actor':>11} {'img/s':>8}")
        for name, s in summary.stages.items():
            actors = str(s.actors) if s.actors else "tasks"
            lines.append(f"{name:<12} {s.rows:>7} {s.busy_s:>8.1f} {actors:>6} {s.per_actor:>11.1f} {s.rate:>8.1f}")
        lines.append(
            f"{'end to end':<12} {summary.processed:>7} {summary.seconds:>8.1f} {'':>6} {'':>11} "
            f"{summary.images_per_second:>8.1f}"
        )
        if summary.steady_seconds >= MIN_STEADY_SECONDS:
            lines.append(
                f"{'steady state':<12} {summary.steady_rows:>7} {summary.steady_seconds:>8.1f} {'':>6} {'':>11} "
                f"{summary.steady_images_per_second:>8.1f}   (from the first written batch on)"
            )
        else:  # a few batches that land together would give a meaningless rate
            lines.append(f"{'steady state':<12} {'':>7} {'':>8} {'':>6} {'':>11} {'—':>8}   (run too short)")
    lines.append(f"manifest: {Path(summary.out) / MANIFEST_FILE}")
    return "\n".join(lines)

"""What ``augmentor run`` will do, worked out without Ray: settings, resource split, resume state, ``run.json``."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from augmentor.datasets.adapters import files_exist
from augmentor.datasets.paths import output_stems
from augmentor.errors import InputError
from augmentor.manifest import MANIFEST_FILE, done_keys, identity_labels, model_id, part_paths
from augmentor.precision import check_precision, resolve_precision
from pipelines.stages import EXTENSIONS, SIZE

RUN_FILE = "run.json"
RESUME_KEYS = ("model_id", "copies", "format", "seed", "identities")  # a rerun must match these to continue
MAX_COPIES = 32  # the listing carries the copies still to make as bits of an int64
WRITE_CPUS = 0.25  # logical CPUs of a write task (PNG encoding of 128 px images is cheap)
MASKER_CPUS = 0.25  # logical CPUs of a masking actor in CPU mode
PREDICTORS_PER_MASKER = 4  # CPU mode: hallucinating actors one masking actor keeps busy


@dataclass
class RunSettings:
    """What ``augmentor run`` does; the CLI fills it from its options."""

    out: Path  # output folder (images/, manifest.parquet, run.json); rerun with it to resume
    model: Path | None  # checkpoint folder (model.safetensors + config.json); None with method donor
    copies: int = 1  # hallucinations per face; > 1 needs a checkpoint with noise channels
    image_format: str = "png"  # png or jpeg
    seed: int = 0  # mixed into every image's noise seed
    batch_size: int | None = None  # faces per forward pass; None: 64 on GPU, 16 on CPU
    workers: int | None = None  # GPU mode: masking actors; CPU mode: hallucinating actors; None: from the cluster
    num_gpus: int | None = None  # GPU actors; None: every GPU of the cluster, 0: CPU only
    address: str | None = None  # Ray cluster address (auto, ray://host:10001); None: start a local one
    progress: bool = True  # tqdm bar with per-stage rates
    precision: str = "auto"  # fp32, bf16, or auto: bf16 where the hallucinating device runs it natively
    method: str = "cascade"  # cascade (the generator) or donor (context of real donor faces, CPU only)
    donors: Path | None = None  # method donor: preprocess output folder of the donor faces, or its donor_bank/
    refine: bool = True  # method donor: the seamless composition; False (--no-refine): the plain one


@dataclass
class ResourcePlan:
    """Actors and logical resources of each stage."""

    mask_actors: int  # FaceMasker actors
    mask_cpus: float  # logical CPUs each
    predictor_actors: int  # Hallucinator + FaceDescriptor actors
    predictor_cpus: float  # logical CPUs each
    predictor_gpus: float  # GPUs each: 1 in GPU mode, else 0
    torch_threads: int  # torch intra-op threads of each predictor
    batch_size: int  # faces per forward pass and per manifest part
    write_cpus: float = WRITE_CPUS  # logical CPUs of each write task
    precision: str = "fp32"  # of the cascade and the descriptor: fp32 or bf16 (resolved, never auto)
    fused_write: bool = False  # CPU only: each hallucinating actor writes its own batches (no write tasks)

    @property
    def device(self) -> str:
        return "cuda" if self.predictor_gpus else "cpu"


def _quantity(x: float) -> float:
    """A Ray resource amount: whole when >= 1, else rounded down to 1e-4."""
    return float(math.floor(x)) if x >= 1 else math.floor(x * 1e4) / 1e4


def plan_resources(
    cluster_cpus: float,
    num_gpus: int,
    workers: int | None,
    batch_size: int | None,
    precision: str = "auto",
    num_nodes: int = 1,
) -> ResourcePlan:
    """Split the cluster between the stages, and resolve ``precision`` for the hallucinating device on this machine.

    GPU mode: one hallucinating actor per GPU (1 CPU each); masking is then the bottleneck, so ``workers`` masking
    actors (default: the CPUs left) take the rest. CPU mode: ``workers`` hallucinating actors (default one per CPU)
    do most of the work (about 80 ms a face at the default widths against 10 ms to mask it), so one masking actor per
    :data:`PREDICTORS_PER_MASKER` of them keeps them fed; each hallucinating actor runs torch on ``cpus / workers``
    threads and writes its own batches (``fused_write``: writing is 1-2% of the work there, and write tasks would
    cost extra worker processes). With GPUs, writing runs as tasks, so the GPU actors' CPU only feeds the GPU.
    A little is always kept free: for the write tasks with GPUs, for the driver without.

    On a cluster of several nodes with CPUs (``num_nodes``) there are at least 2 masking actors, which Ray Data
    spreads over the nodes: a single one would be lost with its node, and its replacement might find no room on the
    others, every CPU there being held by hallucinating actors waiting for masked faces.

    Raises:
        InputError: the cluster is too small for the request.
    """
    spare = cluster_cpus - 2 * WRITE_CPUS
    if num_gpus > 0:
        budget = spare - num_gpus
        if budget <= 0:
            raise InputError(f"{num_gpus} GPU actors need more than {cluster_cpus:g} CPUs (1 each, plus masking)")
        mask_actors = workers or max(1, min(2, num_nodes), int(budget))
        return ResourcePlan(
            mask_actors,
            _quantity(min(1.0, budget / mask_actors)),
            num_gpus,
            1.0,
            1.0,
            1,
            batch_size or 64,
            precision=resolve_precision(precision, "cuda"),
        )
    workers = workers or max(1, int(cluster_cpus))
    mask_actors = max(math.ceil(workers / PREDICTORS_PER_MASKER), min(2, num_nodes))
    predictor_cpus = (spare - mask_actors * MASKER_CPUS) / workers
    if predictor_cpus < 0.01:
        raise InputError(f"{workers} workers do not fit on {cluster_cpus:g} CPUs")
    threads = max(1, int(cluster_cpus) // workers)
    return ResourcePlan(
        mask_actors,
        MASKER_CPUS,
        workers,
        _quantity(predictor_cpus),
        0.0,
        threads,
        batch_size or 16,
        precision=resolve_precision(precision, "cpu"),
        fused_write=True,
    )


def plan_work(table: pd.DataFrame, copies: int, limit: int | None, done: pd.DataFrame) -> pd.DataFrame:
    """The listing with ``label``, ``out_stem`` and ``todo`` (bit ``k`` set = copy ``k`` not in the manifest yet).

    Labels and output names come from the whole listing, so they do not change with ``limit``.
    """
    listing = table[["image_id", "identity", "path"]].astype(str).reset_index(drop=True)
    labels = identity_labels(listing["identity"])
    listing["label"] = listing["identity"].map(labels).astype("int32")
    listing["out_stem"] = output_stems(listing["identity"].tolist(), listing["image_id"].tolist())
    if limit is not None:
        listing = listing.head(limit).copy()
    done = done[done["copy"] < copies].drop_duplicates(["image_id", "copy"])
    bits = pd.Series(np.left_shift(1, done["copy"].to_numpy(np.int64)), index=done["image_id"].to_numpy())
    done_bits = bits.groupby(level=0).sum()  # distinct copies, so the sum of their bits is their union
    finished = listing["image_id"].map(done_bits).fillna(0).astype("int64")
    listing["todo"] = ((1 << copies) - 1) & ~finished
    return listing


def count_rows(listing: pd.DataFrame) -> int:
    """Image x copy rows still to make: the set bits of ``todo``."""
    return int(set_bits(listing["todo"].to_numpy(np.int64)).sum())


def set_bits(values: np.ndarray) -> np.ndarray:
    """The number of set bits of each int64 (``np.bitwise_count``, which NumPy 1.x lacks: both are supported)."""
    as_bytes = np.ascontiguousarray(values, dtype="<i8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1, dtype=np.int64)


def check_run_file(out: Path, info: dict[str, Any], write: bool = True) -> None:
    """Refuse to continue a folder made with other settings (:data:`RESUME_KEYS`); else record them in ``run.json``.

    Raises:
        InputError: the folder holds another run, or a manifest without ``run.json``.
    """
    path = out / RUN_FILE
    if path.is_file():
        found = json.loads(path.read_text())
        changed = [f"{k} {found.get(k)!r} there, {info[k]!r} now" for k in RESUME_KEYS if found.get(k) != info[k]]
        if changed:
            raise InputError(
                f"{out} holds a run with other settings ({'; '.join(changed)}): use a new --out folder, or the same "
                "--model, --copies, --format, --seed and a dataset with the same identities (labels would shift)"
            )
        return
    if (out / MANIFEST_FILE).exists() or part_paths(out):
        raise InputError(f"{out} holds a manifest but no {RUN_FILE}: it was not written by `augmentor run`")
    if write:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path)


def check_model(model: Path, copies: int) -> dict[str, Any]:
    """The checkpoint's architecture, checked against the pipeline.

    Raises:
        FileNotFoundError: not a checkpoint folder.
        InputError: wrong resolution, or ``copies > 1`` with a deterministic model.
    """
    from augmentor.training.checkpoints import read_config

    architecture = read_config(model)["architecture"]
    if int(architecture["resolutions"][-1]) != SIZE:
        raise InputError(f"{model} outputs {architecture['resolutions'][-1]} px; the pipeline aligns faces to {SIZE}")
    if copies > 1 and not architecture.get("noise_channels"):
        raise InputError(
            f"--copies {copies} needs a checkpoint with noise inputs, but {model} has noise_channels=0, so every copy "
            "would be identical; use --copies 1 or a model trained with --set model.noise_channels=N"
        )
    return architecture


def _check_method(settings: RunSettings) -> dict[str, str]:
    """What makes the images: ``model`` and ``model_id`` (the checkpoint's, or the donor bank's path and id)."""
    if settings.method == "donor":
        from augmentor.donors import DonorBank
        from augmentor.parquet import REDO_PREPROCESS, check_files
        from augmentor.preprocessing.shards import shard_paths

        if settings.donors is None:
            raise InputError("method donor needs a donor folder (--donors PATH)")
        check_files(shard_paths(settings.donors), REDO_PREPROCESS)  # a truncated shard is named before any work
        bank = DonorBank.identify(settings.donors)
        # the composition is part of what made an image: a rerun with the other one redoes the rows
        return {"model": str(settings.donors.resolve()), "model_id": bank if settings.refine else f"{bank}-plain"}
    if settings.method != "cascade":
        raise InputError(f"method must be cascade or donor, got {settings.method!r}")
    if settings.model is None:
        raise InputError("method cascade needs a checkpoint folder")
    check_model(settings.model, settings.copies)
    return {"model": str(settings.model.resolve()), "model_id": model_id(settings.model)}


@dataclass
class Prepared:
    """A resolved run: the listing with what is left to do, and the settings recorded in ``run.json``."""

    listing: pd.DataFrame
    info: dict[str, Any]
    absent: pd.Series | None = None  # rows with copies left whose file is not on disk (the driver records them)

    @property
    def pending(self) -> pd.DataFrame:
        """Rows with copies left to make (or to record as missing)."""
        return self.listing[self.listing["todo"] != 0]

    @property
    def todo(self) -> pd.DataFrame:
        """Rows for the Ray job: copies left and the file on disk."""
        keep = self.listing["todo"] != 0
        return self.listing[keep if self.absent is None else keep & ~self.absent]

    @property
    def missing(self) -> pd.DataFrame:
        """Rows with copies left whose file is not on disk: manifest rows with status ``missing``, no Ray work."""
        return self.listing.iloc[:0] if self.absent is None else self.listing[(self.listing["todo"] != 0) & self.absent]

    @property
    def rows_todo(self) -> int:
        return count_rows(self.pending)


def _identities_id(identities: pd.Series) -> str:
    """``<count> identities, sha256 <16 hex>`` of the sorted distinct identities, on which the labels depend."""
    names = sorted(set(identities.astype(str)))
    digest = hashlib.sha256("\0".join(names).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{len(names)} identities, sha256 {digest}"


def prepare(
    table: pd.DataFrame, settings: RunSettings, limit: int | None = None, extra: dict[str, Any] | None = None
) -> Prepared:
    """Check the settings and the output folder, and work out what is left to do. Writes nothing.

    Raises:
        FileNotFoundError, ValueError: bad model, settings or output folder (messages fit for a user).
    """
    if not 1 <= settings.copies <= MAX_COPIES:
        raise InputError(f"copies must be in 1..{MAX_COPIES}, got {settings.copies}")
    if settings.image_format not in EXTENSIONS:
        raise InputError(f"format must be one of {sorted(EXTENSIONS)}, got {settings.image_format!r}")
    check_precision(settings.precision)
    source = _check_method(settings)
    info = {
        **(extra or {}),
        "method": settings.method,
        **source,
        "copies": settings.copies,
        "format": settings.image_format,
        "seed": settings.seed,
        "identities": _identities_id(table["identity"]),
        "precision": settings.precision,  # not a resume key: bf16 and fp32 differ by a grey level or two
    }
    check_run_file(settings.out, info, write=False)
    done = done_keys(settings.out).to_pandas() if settings.out.is_dir() else pd.DataFrame(columns=["image_id", "copy"])
    listing = plan_work(table, settings.copies, limit, done)
    paths = listing.loc[listing["todo"] != 0, "path"]  # a resumed run does not look up the done ones again
    found = pd.Series(files_exist(paths), index=paths.index, dtype=bool).reindex(listing.index, fill_value=True)
    return Prepared(listing, info, ~found)

"""The per-batch work of ``augmentor run``: mask, hallucinate and score, write. Plain Python, no Ray.

Every stage takes and returns a ``dict[str, np.ndarray]`` batch, so it runs the same inside a Ray actor and on a
plain dict in a test. Each stage adds a ``<stage>_s`` column: its wall time spread over the rows it produced, which
``pipelines.augment`` sums into per-stage throughput.

Batch columns, from the listing on: ``image_id``, ``identity``, ``label``, ``path``, ``out_stem`` (see
``augmentor.datasets.paths``), ``todo`` (bit ``k`` set = copy ``k`` still to make); then from :class:`MaskStage`:
``status``, ``reason``, ``mask_area``, ``aligned`` ``[B, 128, 128, 3]`` uint8, ``mask`` ``[B, 128, 128]`` uint8,
``landmarks`` ``[B, 68, 2]`` float32. :class:`Predictor` (or :class:`pipelines.donor.DonorPredictor`) turns each row
into one row per copy, with ``copy``, ``seed``, ``image`` and ``match_score`` (and the donor's image id and identity).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import numpy as np

from augmentor.datasets.paths import image_path
from augmentor.errors import InputError
from augmentor.layout import CROP_SIZE
from augmentor.manifest import write_part

SIZE = CROP_SIZE  # the checkpoint must end at the aligned crop's side
STAGING_DIR = ".staging"  # temporary image files, renamed into images/ when complete
EXTENSIONS = {"png": "png", "jpeg": "jpg"}
JPEG_QUALITY = 95
PASS_THROUGH = ("image_id", "identity", "label", "path", "out_stem", "status", "reason", "mask_area")


def noise_seed(image_id: str, copy: int, seed: int = 0) -> int:
    """The noise seed of one copy of one image: a hash, so it depends on nothing else (batch, order, worker)."""
    digest = hashlib.sha256(f"{seed}\0{copy}\0{image_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def copies_of(todo: np.ndarray, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """Expand the ``todo`` bit masks: ``(row index, copy)`` of every copy still to make, row by row."""
    rows, ks = [], []
    for i, bits in enumerate(np.asarray(todo, dtype=np.int64).tolist()):
        for k in range(copies):
            if bits >> k & 1:
                rows.append(i)
                ks.append(k)
    return np.asarray(rows, dtype=np.int64), np.asarray(ks, dtype=np.int32)


class MaskStage:
    """Decode, detect, 68 landmarks, align, mask. One :class:`~augmentor.faces.FaceMasker` per actor."""

    def __init__(self) -> None:
        from augmentor.faces import FaceMasker

        self.masker = FaceMasker()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        n = len(batch["path"])
        aligned = np.zeros((n, SIZE, SIZE, 3), np.uint8)
        mask = np.zeros((n, SIZE, SIZE), np.uint8)
        landmarks = np.zeros((n, 68, 2), np.float32)  # for the donor method's search and fit
        status = np.empty(n, dtype=object)
        reason = np.empty(n, dtype=object)
        area = np.full(n, np.nan, np.float32)
        for i, path in enumerate(batch["path"]):
            face = self.masker(str(path))  # never raises: failures come back as a status and a reason
            status[i], reason[i] = face.status.value, face.reason
            if face.ok:
                aligned[i], mask[i], area[i] = face.aligned, face.mask, face.mask.mean()
                landmarks[i] = face.landmarks
        seconds = time.perf_counter() - start
        return {
            **batch,
            "status": status,
            "reason": reason,
            "mask_area": area,
            "aligned": aligned,
            "mask": mask,
            "landmarks": landmarks,
            "mask_s": np.full(n, seconds / max(n, 1)),
        }


class MatchScorer:
    """The match score of a hallucinating stage: the Pearson correlation of the dlib-ResNet descriptors of each
    output and of its aligned original. Subclasses set ``descriptor``, ``device``, ``precision`` and ``batch_size``."""

    def describe(self, images: np.ndarray):
        """dlib-ResNet descriptors ``[N, 128]`` of ``[N, S, S, 3]`` uint8 images, ``batch_size`` at a time."""
        import torch

        from augmentor.evaluation.metrics import to_tensor
        from augmentor.precision import autocast

        with autocast(self.precision, self.device):
            chunks = [
                self.descriptor(to_tensor(images[i : i + self.batch_size])).float()
                for i in range(0, len(images), self.batch_size)
            ]
        return torch.cat(chunks)

    def match_scores(self, outputs: np.ndarray, originals: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Score of ``outputs[j]`` against ``originals[position[j]]``; each original is described once."""
        import torch

        from augmentor.evaluation.metrics import pearson

        with torch.inference_mode():
            reference = self.describe(originals)
            return pearson(self.describe(outputs), reference[position]).float().cpu().numpy()


def stage_columns(batch: dict[str, np.ndarray], rows: np.ndarray, ks: np.ndarray, start: float) -> dict:
    """The output columns every hallucinating stage shares: the pass-through columns of each output row, its copy
    number, and the masking and hallucinating seconds spread over the copies (``start``: the stage's start time)."""
    per_copy = np.asarray([int(b).bit_count() for b in batch["todo"]], np.float64)[rows]
    seconds = time.perf_counter() - start
    return {
        **{name: np.asarray(batch[name])[rows] for name in PASS_THROUGH},
        "copy": ks,
        "mask_s": np.asarray(batch["mask_s"], np.float64)[rows] / np.maximum(per_copy, 1),
        "hallucinate_s": np.full(len(rows), seconds / max(len(rows), 1)),
    }


class Predictor(MatchScorer):
    """Hallucinate every copy still to make and score it against the aligned original, in one actor.

    Loads the checkpoint and the dlib-ResNet descriptor once. Failed rows pass through with a blank image.

    Args:
        model: Checkpoint folder.
        copies: Copies per image (the ``todo`` bits range over them).
        seed: Run seed, mixed into every image's noise seed.
        device: ``cpu``, ``cuda``, ``auto`` ...
        batch_size: Images per forward pass.
        num_threads: torch intra-op threads of this process; None leaves torch's setting alone.
        descriptor_weights: The match score's dlib-ResNet: a ``.dat`` or a pack's ``identity.safetensors``;
            None uses the installed ``.dat``.
        precision: ``fp32``, ``bf16`` or ``auto`` (bf16 where ``device`` runs it natively; see
            :mod:`augmentor.precision`), for both the cascade and the descriptor.
    """

    def __init__(
        self,
        model: str,
        copies: int = 1,
        seed: int = 0,
        device: str = "auto",
        batch_size: int = 64,
        num_threads: int | None = None,
        descriptor_weights: str | None = None,
        precision: str = "auto",
    ):
        import torch

        from augmentor.evaluation.metrics import FaceDescriptor
        from augmentor.hallucinator import Hallucinator
        from augmentor.precision import pick_device, resolve_precision

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.precision = resolve_precision(precision, pick_device(device))
        self.hallucinator = Hallucinator.from_pretrained(
            model, device=device, batch_size=batch_size, precision=self.precision
        )
        if self.hallucinator.resolution != SIZE:
            raise InputError(f"{model} outputs {self.hallucinator.resolution} px; the pipeline aligns to {SIZE} px")
        self.device = self.hallucinator.device
        self.descriptor = FaceDescriptor(descriptor_weights).to(self.device)
        self.copies, self.seed, self.batch_size = copies, seed, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        start = time.perf_counter()
        rows, ks = copies_of(batch["todo"], self.copies)
        image_ids = [str(batch["image_id"][i]) for i in rows]
        seeds = np.asarray([noise_seed(i, int(k), self.seed) for i, k in zip(image_ids, ks, strict=True)], np.int64)
        images = np.zeros((len(rows), SIZE, SIZE, 3), np.uint8)
        scores = np.full(len(rows), np.nan, np.float32)
        ok = np.asarray([str(s) == "ok" for s in batch["status"]], dtype=bool)
        faces = ok[rows]  # output rows with a face to paint around
        if faces.any():
            aligned, mask = batch["aligned"][rows[faces]], batch["mask"][rows[faces]]
            with torch.inference_mode():
                out = self.hallucinator(aligned * mask[..., None], mask, seeds=seeds[faces].tolist())
            images[faces] = out
            originals = np.flatnonzero(ok)
            scores[faces] = self.match_scores(out, batch["aligned"][originals], np.searchsorted(originals, rows[faces]))
        return {**stage_columns(batch, rows, ks, start), "seed": seeds, "image": images, "match_score": scores}


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """PNG or JPEG (quality :data:`JPEG_QUALITY`) bytes of an ``[H, W, 3]`` RGB uint8 image."""
    import cv2

    if image_format == "png":
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    elif image_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        raise InputError(f"unknown image format {image_format!r}; expected one of {sorted(EXTENSIONS)}")
    if not ok:
        raise ValueError(f"{image_format} encoding failed")
    return buf.tobytes()


def write_batch(batch: dict[str, np.ndarray], out_dir: str, image_format: str, model_id: str) -> dict[str, np.ndarray]:
    """Write a batch's images (temp file + rename), then its manifest part (also atomic).

    The part comes last, so a row is in the manifest only once its image is in place; a batch cut short is simply
    done again by the next run, rewriting the same files.

    Returns:
        The small per-row record the driver counts: key, status and the stage times.
    """
    start = time.perf_counter()
    n = len(batch["image_id"])
    if n == 0:
        return _record(batch, 0.0)
    out = Path(out_dir)
    staging = out / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    ok = [str(s) == "ok" for s in batch["status"]]
    outputs: list[str | None] = []
    for i in range(n):
        if not ok[i]:
            outputs.append(None)
            continue
        relative = image_path(str(batch["out_stem"][i]), int(batch["copy"][i]), EXTENSIONS[image_format])
        final = out / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = staging / f"{uuid.uuid4().hex}.{EXTENSIONS[image_format]}"
        tmp.write_bytes(encode_image(batch["image"][i], image_format))
        os.replace(tmp, final)
        outputs.append(relative)

    def optional(values: np.ndarray) -> list[float | None]:
        return [None if not flag or np.isnan(v) else float(v) for flag, v in zip(ok, values.tolist(), strict=True)]

    def donor(name: str) -> list[str | None]:  # null for the cascade's rows and for failures
        values = batch.get(name)
        return [None] * n if values is None else [str(v) if flag else None for flag, v in zip(ok, values, strict=True)]

    write_part(
        {
            "image_id": [str(v) for v in batch["image_id"]],
            "identity": [str(v) for v in batch["identity"]],
            "label": [int(v) for v in batch["label"]],
            "copy": [int(v) for v in batch["copy"]],
            "source_path": [str(v) for v in batch["path"]],
            "output_path": outputs,
            "status": [str(v) for v in batch["status"]],
            "reason": [str(v) for v in batch["reason"]],
            "model_id": [model_id] * n,
            "seed": [int(v) for v in batch["seed"]],
            "mask_area": optional(np.asarray(batch["mask_area"], np.float64)),
            "match_score": optional(np.asarray(batch["match_score"], np.float64)),
            "donor_image_id": donor("donor_image_id"),
            "donor_identity": donor("donor_identity"),
        },
        out,
    )
    return _record(batch, time.perf_counter() - start)


def _record(batch: dict[str, np.ndarray], seconds: float) -> dict[str, np.ndarray]:
    n = len(batch["image_id"])
    return {
        "image_id": np.asarray(batch["image_id"], dtype=object),
        "copy": np.asarray(batch["copy"], np.int32),
        "status": np.asarray(batch["status"], dtype=object),
        "mask_s": np.asarray(batch["mask_s"], np.float64),
        "hallucinate_s": np.asarray(batch["hallucinate_s"], np.float64),
        "write_s": np.full(n, seconds / max(n, 1)),
    }


class PredictAndWrite(Predictor):
    """:class:`Predictor` then :func:`write_batch` in the same actor: the CPU-only layout, where a separate write
    stage would cost Ray an extra worker process (2-3 s of start-up on a small machine) for 1-2% of the work.

    Args:
        out_dir, image_format, model_id: As for :func:`write_batch`.
        **predictor: As for :class:`Predictor`.
    """

    def __init__(self, out_dir: str, image_format: str, model_id: str, **predictor) -> None:
        super().__init__(**predictor)
        self.writer = {"out_dir": out_dir, "image_format": image_format, "model_id": model_id}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return write_batch(super().__call__(batch), **self.writer)

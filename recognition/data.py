"""Training faces for recognition: real crops from preprocess shards and hallucinated copies from pipeline manifests.

Two kinds of ``--manifest`` are read, told apart by their columns:

* **real** (an ``augmentor preprocess`` output folder or one of its ``part-*.parquet`` shards): the ``aligned``
  column holds the 128x128 aligned crop as PNG bytes (:mod:`augmentor.preprocessing.shards`).
* **hallucinated** (the Parquet manifest of ``augmentor run``, a file or a folder of Parquet files): one row per
  input image and copy, with ``output_path`` naming the hallucinated 128x128 image file. The columns read here are
  :data:`PIPELINE_COLUMNS` (+ ``copy``) of :data:`augmentor.manifest.MANIFEST_SCHEMA`, which owns the full schema
  and the output layout. Pass the run's output folder or its ``manifest.parquet``;
  a relative ``output_path`` is taken relative to the output folder, as the pipeline writes it.

Only rows with status ``ok`` are used. ``image_id`` names the *source* image in both kinds, so the train/validation
split is made over source images and the hallucinated copies of a validation image never reach training.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor.errors import InputError
from augmentor.layout import CROP_SIZE
from augmentor.manifest import MANIFEST_FILE, PART_GLOB, PARTS_DIR
from augmentor.parquet import REDO_PREPROCESS, REDO_RUN, read_schema, read_table
from augmentor.preprocessing.shards import SHARD_GLOB, decode_png

log = logging.getLogger(__name__)

SHARD_COLUMNS = ("image_id", "identity", "status", "aligned")  # of augmentor.preprocessing.shards.SHARD_SCHEMA
PIPELINE_COLUMNS = ("image_id", "identity", "status", "output_path")  # of augmentor.manifest.MANIFEST_SCHEMA
REAL, HALLUCINATED = "real", "hallucinated"


class ManifestError(InputError):
    """A --manifest that is neither a preprocess output nor a pipeline manifest."""


@dataclass
class RecognitionDataConfig:
    """Which rows are used and how crops are fed to the network."""

    image_size: int = CROP_SIZE  # 128, 112, 96 or 64 px; the aligned 128 crop is resized (area), never cropped (context)
    mirror: bool = True  # random horizontal flips in training
    val_fraction: float = 0.1  # share of source images held out for validation (and the plateau stop)
    loader_workers: int = 2  # DataLoader processes that decode PNG/JPEG; 0 decodes in the training process
    copy_probability: float | None = None  # None: train on the union of real rows and copies; p: an epoch is one
    # pass over the real crops, each swapped with probability p for one of its copies (recognition/sampling.py)


def _parquet_files(path: Path) -> tuple[list[Path], Path]:
    """The Parquet files of a ``--manifest`` and the folder that relative ``output_path`` values start from.

    A pipeline output folder holds ``manifest.parquet`` (the merged file) and, while a run is going or after a
    crash, ``manifest/part-*.parquet``: both are read, as ``augmentor.manifest.read_manifest`` does. Output paths
    are relative to the output folder.
    """
    if path.is_file():
        return [path], path.parent.parent if path.parent.name == PARTS_DIR else path.parent
    if not path.is_dir():
        raise ManifestError(f"--manifest {path} does not exist")
    merged = [path / MANIFEST_FILE] if (path / MANIFEST_FILE).is_file() else []
    if files := merged + sorted((path / PARTS_DIR).glob(PART_GLOB)):
        return files, path
    if shards := sorted(path.glob(SHARD_GLOB)):
        return shards, path.parent if path.name == PARTS_DIR else path
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise ManifestError(f"--manifest {path} holds no Parquet files")
    return files, path


def _recovery(path: Path) -> str:
    """How to redo a corrupt file, from where it lies: a pipeline manifest's, or a preprocess shard."""
    if path.name == MANIFEST_FILE or path.parent.name == PARTS_DIR:
        return REDO_RUN
    return REDO_PREPROCESS


def manifest_kind(path: str | Path) -> str:
    """``real`` (preprocess shards) or ``hallucinated`` (pipeline manifest), from the Parquet columns.

    Raises:
        ManifestError: the path is missing, holds no Parquet files, or has neither column set.
    """
    files, _ = _parquet_files(Path(path))
    names = set(read_schema(files[0], _recovery(files[0])).names)
    if set(SHARD_COLUMNS) <= names:
        return REAL
    if set(PIPELINE_COLUMNS) <= names:
        return HALLUCINATED
    raise ManifestError(
        f"{files[0]} is neither a preprocess shard (needs {', '.join(SHARD_COLUMNS)}) nor a pipeline manifest "
        f"(needs {', '.join(PIPELINE_COLUMNS)}); it has {', '.join(sorted(names))}"
    )


def read_training_rows(path: str | Path) -> pd.DataFrame:
    """The ok rows of one manifest as ``image_id, identity, kind, png, path``.

    ``png`` holds the encoded crop (real rows); ``path`` the image file (hallucinated rows). Pipeline rows are kept
    once per ``(image_id, copy)``, the first one read (``manifest.parquet`` before the parts). Missing hallucinated image files raise, so a broken run
    is found before training starts.
    """
    path = Path(path)
    kind = manifest_kind(path)
    files, base = _parquet_files(path)
    columns = list(SHARD_COLUMNS if kind == REAL else PIPELINE_COLUMNS)
    if kind == HALLUCINATED and "copy" in read_schema(files[0], _recovery(files[0])).names:
        columns.append("copy")
    table = pd.concat([read_table(f, columns, _recovery(f)).to_pandas() for f in files], ignore_index=True)
    if "copy" in table:
        table = table.drop_duplicates(["image_id", "copy"], keep="first")
    table = table[table["status"] == "ok"].reset_index(drop=True)
    out = pd.DataFrame({"image_id": table["image_id"].astype(str), "identity": table["identity"].astype(str)})
    out["kind"] = kind
    if kind == REAL:
        out["png"] = table["aligned"]
        out["path"] = None
    else:
        paths = [str(p if Path(p).is_absolute() else base / p) for p in table["output_path"]]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise ManifestError(f"{path}: {len(missing)} hallucinated image file(s) missing, e.g. {missing[0]}")
        out["png"] = None
        out["path"] = paths
    log.info("%s: %d %s rows (status ok)", path, len(out), kind)
    return out


def read_training_table(paths: list[str | Path] | tuple[str, ...]) -> pd.DataFrame:
    """The union of several manifests, with a ``label`` column: the sorted string identities numbered from 0."""
    if not paths:
        raise ManifestError("no --manifest given")
    frames = []
    for i, path in enumerate(paths):
        frame = read_training_rows(path)
        frame["manifest"] = i
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        raise ManifestError("the manifests hold no row with status ok")
    real_ids = set(table.loc[table["kind"] == REAL, "image_id"])
    fake_ids = set(table.loc[table["kind"] == HALLUCINATED, "image_id"])
    if real_ids and fake_ids and not fake_ids & real_ids:
        log.warning("no hallucinated image_id matches a real one: are the manifests from the same dataset?")
    identities = sorted(table["identity"].unique())
    table["label"] = table["identity"].map({name: i for i, name in enumerate(identities)}).astype(np.int64)
    return table


def split_by_source(image_ids: pd.Series | np.ndarray, val_fraction: float, seed: int = 0) -> np.ndarray:
    """True for rows held out for validation: ``round(val_fraction * sources)`` source images, drawn with ``seed``.

    Every row of one ``image_id`` (its real crop and all its hallucinated copies) lands on the same side.
    """
    ids = np.asarray(image_ids, dtype=object)
    unique = np.array(sorted(set(ids.tolist())), dtype=object)
    num_val = round(val_fraction * len(unique))
    if val_fraction > 0 and len(unique) > 1:
        num_val = min(max(num_val, 1), len(unique) - 1)
    rng = np.random.default_rng(seed)
    val_ids = unique[rng.permutation(len(unique))[:num_val]]
    return pd.Series(ids).isin(set(val_ids.tolist())).to_numpy()


def rows_fingerprint(table: pd.DataFrame) -> str:
    """A short hash of the rows used (ids, identities, kinds), to check that a resumed run sees the same data."""
    hashes = pd.util.hash_pandas_object(table[["image_id", "identity", "kind"]], index=False)
    return hashlib.sha1(hashes.to_numpy().tobytes()).hexdigest()[:16]


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 crop at ``size x size`` (area filter when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    import cv2

    shrink = image.shape[0] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def load_rgb(path: str) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path} is not a readable image")
    return np.ascontiguousarray(image[..., ::-1])


class FaceDataset(torch.utils.data.Dataset):
    """Decodes one face per item: ``(image [3, S, S] uint8, label)``; mirrored at random when ``mirror``.

    Holds the encoded crops (PNG bytes) and file paths, not decoded pixels, so a CASIA-sized set fits in memory.
    """

    def __init__(self, table: pd.DataFrame, image_size: int, mirror: bool = False):
        self.png = table["png"].tolist()
        self.path = table["path"].tolist()
        self.labels = torch.tensor(table["label"].to_numpy(np.int64))
        self.image_size = image_size
        self.mirror = mirror

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """The ``[S, S, 3]`` uint8 RGB crop of row ``index`` (never mirrored)."""
        png = self.png[index]
        image = decode_png(png) if png is not None else load_rgb(self.path[index])
        return resize_crop(image, self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.image(index)).permute(2, 0, 1)  # [3, S, S] uint8
        if self.mirror and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image.contiguous(), self.labels[index]


@dataclass
class FaceData:
    """The union of the manifests with its split."""

    table: pd.DataFrame  # image_id, identity, kind, png, path, manifest, label
    is_val: np.ndarray  # [rows] bool
    identities: list[str]  # label -> identity name

    @classmethod
    def load(cls, manifests: list[str] | tuple[str, ...], val_fraction: float, seed: int = 0) -> FaceData:
        table = read_training_table(list(manifests))
        identities = sorted(table["identity"].unique())
        return cls(table, split_by_source(table["image_id"], val_fraction, seed), identities)

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def train_rows(self) -> pd.DataFrame:
        """Training rows: every real and hallucinated row of a training source image."""
        return self.table[~self.is_val].reset_index(drop=True)

    def val_rows(self) -> pd.DataFrame:
        """Validation rows: the real crops of the validation images (all their rows if there is no real manifest).

        The hallucinated copies of validation images are used nowhere, so validation measures real faces.
        """
        val = self.table[self.is_val]
        if (val["kind"] == REAL).any():
            val = val[val["kind"] == REAL]
        return val.reset_index(drop=True)

    def summary(self) -> dict[str, object]:
        """Counts for the checkpoint and the Table 2 report."""
        t = self.table
        train = t[~self.is_val]
        return {
            "real_images": int((t["kind"] == REAL).sum()),
            "hallucinated_images": int((t["kind"] == HALLUCINATED).sum()),
            "identities": self.num_classes,
            "source_images": int(t["image_id"].nunique()),
            "train_rows": len(train),
            "train_real": int((train["kind"] == REAL).sum()),
            "train_hallucinated": int((train["kind"] == HALLUCINATED).sum()),
            "val_rows": len(self.val_rows()),
            "val_source_images": int(t.loc[self.is_val, "image_id"].nunique()),
            "fingerprint": rows_fingerprint(t),
        }

"""Training data: the ``ok`` rows of preprocess shards (or of a pack) as uint8 tensors, split by identity."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from augmentor.errors import InputError
from augmentor.preprocessing.shards import decode_mask, decode_png, decode_valid, read_faces

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where the training faces come from and how they are split."""

    path: str = ""  # an `augmentor preprocess` output folder, or an `augmentor pack` folder / its faces.parquet
    extra_paths: tuple[str, ...] = ()  # more such folders, concatenated (e.g. celeba-extra); ids must not collide
    val_fraction: float = 0.05  # share of identities held out for validation
    max_padded_fraction: float = 1.0  # drop rows whose listing's padded_fraction is larger (CelebA's padded images)
    max_border_fraction: float = 1.0  # drop rows whose aligned crop lay more than this much outside the photo
    limit: int | None = None  # use only the first N rows (smoke tests)
    mirror: bool = True  # random horizontal flips


@dataclass
class FaceSet:
    """Aligned faces and masks held in memory."""

    images: torch.Tensor  # [N, 3, S, S] uint8 RGB
    masks: torch.Tensor  # [N, 1, S, S] uint8 in {0, 1}
    identities: list[str]
    image_ids: list[str]
    fingerprint: str  # sha256 of the sorted image ids, recorded in checkpoints
    valid: torch.Tensor | None = None  # [N, 1, S, S] uint8, 0 = beyond the photo's edge (no loss); None: all valid

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = torch.ones_like(self.masks)

    def __len__(self) -> int:
        return len(self.image_ids)

    def inside_photo(self) -> torch.Tensor:
        """Indices of the faces whose whole window lies inside the photo (every pixel valid)."""
        return torch.nonzero(self.valid.flatten(1).min(dim=1).values > 0).flatten()

    def subset(self, index: np.ndarray) -> FaceSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        return FaceSet(
            self.images[idx],
            self.masks[idx],
            [self.identities[i] for i in index],
            [self.image_ids[i] for i in index],
            self.fingerprint,
            self.valid[idx],
        )


def fingerprint(image_ids: list[str]) -> str:
    """sha256 of the sorted image ids (16 hex digits): which faces a model was trained on."""
    return hashlib.sha256("\n".join(sorted(image_ids)).encode()).hexdigest()[:16]


def usable_rows(table: pa.Table, max_padded_fraction: float = 1.0, max_border_fraction: float = 1.0) -> np.ndarray:
    """Boolean mask of the rows that pass the :class:`DataConfig` filters (a missing padded_fraction passes)."""
    keep = np.ones(table.num_rows, bool)
    if "padded_fraction" in table.column_names and max_padded_fraction < 1.0:
        keep &= np.asarray(pc.fill_null(table["padded_fraction"], 0.0)) <= max_padded_fraction
    if max_border_fraction < 1.0:
        keep &= np.asarray(table["border_fraction"]) <= max_border_fraction
    return keep


def load_faces(config: DataConfig) -> FaceSet:
    """Read and decode the ``ok`` rows of a preprocess folder or of a pack (and of ``extra_paths``).

    Raises:
        FileNotFoundError: no shards and no pack at one of the paths.
        InputError: no usable row after filtering, or two sources share an image id.
    """
    sources = [config.path, *config.extra_paths]
    parts = [_load_one(path, config) for path in sources]
    ids = [i for part in parts for i in part.image_ids]
    if len(set(ids)) != len(ids):
        raise InputError(f"image ids collide across {sources}: give each source its own preprocess folder")
    faces = FaceSet(
        images=torch.cat([p.images for p in parts]),
        masks=torch.cat([p.masks for p in parts]),
        identities=[i for p in parts for i in p.identities],
        image_ids=ids,
        fingerprint=fingerprint(ids),
        valid=torch.cat([p.valid for p in parts]),
    )
    if config.limit is not None:
        faces = faces.subset(np.arange(min(config.limit, len(faces))))
    log.info("loaded %d faces from %s", len(faces), ", ".join(sources))
    return faces


def _load_one(path: str, config: DataConfig) -> FaceSet:
    table = read_faces(path)
    table = table.filter(usable_rows(table, config.max_padded_fraction, config.max_border_fraction))
    if config.limit is not None:
        table = table.slice(0, config.limit)
    if table.num_rows == 0:
        raise InputError(f"no usable faces in {path} after filtering")
    aligned, masks = table["aligned"].to_pylist(), table["mask"].to_pylist()
    with ThreadPoolExecutor() as pool:  # cv2 and PIL release the GIL while decoding
        images = np.stack(list(pool.map(decode_png, aligned)))  # [N, S, S, 3]
        mask_arr = np.stack(list(pool.map(decode_mask, masks)))  # [N, S, S]
    stored = table["valid"].to_pylist() if "valid" in table.column_names else [None] * len(masks)
    valid = np.stack([decode_valid(v, mask_arr.shape[-1]) for v in stored])  # [N, S, S]
    ids = table["image_id"].to_pylist()
    return FaceSet(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        masks=torch.from_numpy(mask_arr)[:, None].contiguous(),
        identities=[str(i) for i in table["identity"].to_pylist()],
        image_ids=ids,
        fingerprint=fingerprint(ids),
        valid=torch.from_numpy(valid)[:, None].contiguous(),
    )


def split_by_identity(identities: list[str], val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a train / validation split that shares no identity.

    At least one identity goes to validation when ``val_fraction > 0`` and there are two or more.
    """
    names = sorted(set(identities))
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    num_val = 0 if val_fraction <= 0 or len(names) < 2 else max(1, round(val_fraction * len(names)))
    held = set(names[:num_val])
    is_val = np.array([i in held for i in identities])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def to_model_range(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and masks to ``([B, 3, S, S] in [-1, 1], [B, 1, S, S] in {0, 1})`` float32."""
    return images.float() / 127.5 - 1.0, masks.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_range`: rounds, so pasted face pixels come back bit-identical."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def batches(num: int, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = True):
    """Yield index tensors of one epoch."""
    order = torch.randperm(num, generator=generator) if shuffle else torch.arange(num)
    stop = num - num % batch_size if drop_last and num >= batch_size else num
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def mirror(images: torch.Tensor, *others: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Flip a random half of the batch left-right; ``others`` (masks, validity) flip with their images."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    flip = flip.to(images.device)[:, None, None, None]
    return tuple(torch.where(flip, x.flip(-1), x) for x in (images, *others))

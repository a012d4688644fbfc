"""The donor bank: every usable face of an ``augmentor preprocess`` folder, described for search, saved once.

Saved beside the shards, in ``<preprocess out>/donor_bank/``:

- ``bank.json``: format, version, the settings it was built with (:meth:`DonorConfig.bank_key`), the shards it
  was built from (name, size, modification time), the donor count and the bank id;
- ``features.npz``: ``features`` ``[M, NUM_FEATURES]`` float32, ``landmarks`` ``[M, 68, 2]`` float32,
  ``context_valid`` ``[M]`` float32 (share of the context inside the photo), ``shard`` and ``row`` ``[M]`` int32
  (where each donor's pixels are), ``image_id`` and ``identity`` (unicode arrays; no pickles), and
  ``appearance`` ``[M, 128]`` float32 when built for a config with ``appearance_weight > 0``.

The pixels stay in the shards (no second copy): loading reads their ``aligned``, ``mask`` and ``valid`` columns and
decodes a donor's PNGs only when it is used. A saved bank is reused as long as the shards and the bank settings are
unchanged; otherwise it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from augmentor.donors.compose import compose
from augmentor.donors.config import DonorConfig
from augmentor.donors.features import context_valid_share, describe, describe_all
from augmentor.donors.seamless import compose_refined
from augmentor.donors.search import nearest
from augmentor.errors import InputError

log = logging.getLogger(__name__)

BANK_DIR = "donor_bank"  # the bank's folder inside a preprocess output folder
BANK_FILE = "bank.json"
FEATURES_FILE = "features.npz"
FORMAT = "augmentor-donor-bank"
VERSION = 1
SIZE = 128  # aligned crop side
DECODED_CACHE = 512  # donors kept decoded (about 80 KB each)


@dataclass
class DonorResult:
    """One target face in one donor's context."""

    image: np.ndarray  # [128, 128, 3] uint8; equal to the target wherever its mask is 1
    donor_image_id: str
    donor_identity: str
    distance: float  # search distance (lower is closer; see DonorConfig)


def _sources(shards: list[Path]) -> list[dict]:
    return [{"name": p.name, "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in shards]


def bank_id(shards: list[Path], config: DonorConfig) -> str:
    """16 hex digits naming a bank: its shards' names and sizes and the bank settings (not the search settings)."""
    key = {"version": VERSION, "bank": config.bank_key(), "shards": [(p.name, p.stat().st_size) for p in shards]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _locate(path: Path) -> tuple[Path, Path]:
    """``(shard folder, bank folder)`` of a preprocess output folder or of a saved bank folder."""
    from augmentor.preprocessing.shards import SHARD_GLOB, shard_paths

    if (path / BANK_FILE).is_file():
        shards_dir = (path / json.loads((path / BANK_FILE).read_text()).get("shards", "..")).resolve()
        return shards_dir, path
    if shard_paths(path):
        return path, path / BANK_DIR
    raise FileNotFoundError(
        f"{path} is neither an `augmentor preprocess` output folder ({SHARD_GLOB}) nor a saved donor bank ({BANK_FILE})"
    )


def _decode_valid(data: bytes | None) -> np.ndarray:
    from augmentor.preprocessing.shards import decode_mask

    return np.ones((SIZE, SIZE), np.uint8) if data is None else decode_mask(data)


def _padded(columns: dict, i: int) -> float:
    value = columns.get("padded_fraction", [None] * (i + 1))[i]
    return 0.0 if value is None or math.isnan(value) else float(value)


class DonorBank:
    """Faces whose context can be lent to others, with their search features.

    Build or reuse one with :meth:`load`; then :meth:`recontext` puts target faces into their nearest donors'
    contexts.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        pixels: list[tuple[bytes, bytes, bytes | None]],
        config: DonorConfig,
        bank_id: str,
        built: bool = False,
    ):
        self.features = arrays["features"]  # [M, NUM_FEATURES] float32
        self.landmarks = arrays["landmarks"]  # [M, 68, 2] float32
        self.context_valid = arrays["context_valid"]  # [M] float32
        self.image_ids = [str(v) for v in arrays["image_id"]]
        self.identities = np.asarray([str(v) for v in arrays["identity"]], dtype=object)
        self.config = config
        self.id = bank_id
        self.built = built  # True when this load built the bank rather than reading a saved one
        self._pixels = pixels  # per donor: aligned PNG, mask PNG, valid PNG or None
        self.donor = lru_cache(maxsize=DECODED_CACHE)(self._decode)
        self.appearance = arrays.get("appearance")  # [M, 128] float32 or None
        self._describer = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def load(cls, path: str | os.PathLike[str], config: DonorConfig | None = None, save: bool = True) -> DonorBank:
        """The bank of a preprocess output folder (or of a saved bank folder), built and saved if needed.

        Args:
            path: An ``augmentor preprocess`` output folder, or its ``donor_bank/`` folder.
            config: Bank, search and composition settings; a saved bank built with other bank settings is rebuilt.
            save: Write a bank that had to be built (skipped with a warning when the folder is read-only).

        Raises:
            FileNotFoundError: ``path`` holds neither shards nor a bank.
            ValueError: no face in the shards can be a donor.
        """
        from augmentor.preprocessing.shards import shard_paths

        config = config or DonorConfig()
        shards_dir, bank_dir = _locate(Path(path))
        shards = shard_paths(shards_dir)
        if not shards:
            raise FileNotFoundError(f"the donor bank's shards are gone from {shards_dir}")
        identifier = bank_id(shards, config)
        meta = bank_dir / BANK_FILE
        if meta.is_file():
            saved = json.loads(meta.read_text())
            if (
                saved.get("format") == FORMAT
                and saved.get("version") == VERSION
                and saved.get("bank") == config.bank_key()
                and (saved.get("appearance", False) or not config.appearance)
                and saved.get("sources") == _sources(shards)
            ):
                with np.load(bank_dir / FEATURES_FILE, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
                log.info("donor bank %s: %d donors, reused", bank_dir, len(arrays["features"]))
                return cls(arrays, _read_pixels(shards, arrays), config, identifier)
            log.info("donor bank %s is out of date; rebuilding", bank_dir)
        arrays, pixels = _build(shards, config)
        if save:
            try:
                _save(bank_dir, arrays, shards, config, identifier)
            except OSError as exc:
                log.warning("could not save the donor bank in %s (%s); it lives in memory only", bank_dir, exc)
        return cls(arrays, pixels, config, identifier, built=True)

    @staticmethod
    def identify(path: str | os.PathLike[str], config: DonorConfig | None = None) -> str:
        """The id :meth:`load` would give the bank of ``path``, without building or reading it.

        Raises:
            FileNotFoundError: ``path`` holds neither shards nor a bank.
        """
        from augmentor.preprocessing.shards import shard_paths

        shards_dir, _ = _locate(Path(path))
        shards = shard_paths(shards_dir)
        if not shards:
            raise FileNotFoundError(f"the donor bank's shards are gone from {shards_dir}")
        return bank_id(shards, config or DonorConfig())

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from augmentor.preprocessing.shards import decode_mask, decode_png

        aligned, mask, valid = self._pixels[index]
        return decode_png(aligned), decode_mask(mask), _decode_valid(valid)

    def search(
        self, aligned: np.ndarray, masks: np.ndarray, landmarks: np.ndarray, identities: list[str | None], k: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices and distances ``[N, k]`` of every target's ``k`` nearest donors of another identity."""
        queries = describe_all(aligned, masks, landmarks, self.config.ring_width)
        penalty = 1.0 - self.context_valid
        if not self.config.appearance:
            return nearest(queries, self.features, penalty, list(identities), self.identities, k, self.config)
        if self.appearance is None:
            raise InputError("appearance_weight > 0, but this bank holds no appearance descriptors; reload it")
        # re-rank at most as many donors as every target has of another identity (at least k: fewer raises below)
        own = max((int((self.identities == i).sum()) for i in identities if i), default=0)
        pool = max(k, min(self.config.candidates, len(self) - own))
        indices, distances = nearest(
            queries, self.features, penalty, list(identities), self.identities, pool, self.config
        )
        if self._describer is None:
            from augmentor.donors.appearance import AppearanceDescriber

            self._describer = AppearanceDescriber()
        looks = self._describer(aligned, masks, landmarks)  # [N, 128]
        gap = np.linalg.norm(self.appearance[indices] - looks[:, None], axis=-1)  # [N, pool]
        total = distances + self.config.appearance_weight * gap / self.config.appearance_scale
        order = np.argsort(total, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(indices, order, 1), np.take_along_axis(total, order, 1)

    def recontext(
        self,
        aligned: np.ndarray,
        masks: np.ndarray,
        landmarks: np.ndarray,
        identities: list[str | None],
        k: int = 1,
        refine: bool = True,
    ) -> list[list[DonorResult]]:
        """Put every target face into the context of each of its ``k`` nearest donors.

        Args:
            aligned: ``[N, 128, 128, 3]`` uint8 aligned crops (only the face pixels are used).
            masks: ``[N, 128, 128]`` uint8 in {0, 1}, 1 = face (any nonzero value counts as face).
            landmarks: ``[N, 68, 2]`` float32 aligned landmarks.
            identities: Each target's identity; a donor of that identity is never used. ``""`` or None: unknown.
            k: Donors (so distinct images) per target, best first.
            refine: The seamless composition (:mod:`augmentor.donors.seamless`); False: the plain one
                (:mod:`augmentor.donors.compose`).

        Returns:
            ``N`` lists of ``k`` results; every image equals its target wherever the mask is 1.

        Raises:
            ValueError: mismatched shapes, or fewer than ``k`` donors of another identity.
        """
        aligned, masks = np.asarray(aligned), (np.asarray(masks) > 0).astype(np.uint8)  # 0/255 masks work too
        landmarks = np.asarray(landmarks, np.float32)
        n = len(aligned)
        if aligned.shape[1:] != (SIZE, SIZE, 3) or masks.shape != (n, SIZE, SIZE) or landmarks.shape != (n, 68, 2):
            raise ValueError(
                f"expected [N, {SIZE}, {SIZE}, 3] crops, [N, {SIZE}, {SIZE}] masks and [N, 68, 2] landmarks, got "
                f"{aligned.shape}, {masks.shape} and {landmarks.shape}"
            )
        if len(identities) != n:
            raise ValueError(f"{n} targets but {len(identities)} identities")
        if n == 0:
            return []
        indices, distances = self.search(aligned, masks, landmarks, identities, k)
        return [
            [
                self.compose(aligned[i], masks[i], landmarks[i], j, d, refine)
                for j, d in zip(indices[i].tolist(), distances[i].tolist(), strict=True)
            ]
            for i in range(n)
        ]

    def compose(
        self,
        aligned: np.ndarray,
        mask: np.ndarray,
        landmarks: np.ndarray,
        donor: int,
        distance: float = float("nan"),
        refine: bool = True,
    ) -> DonorResult:
        """One target (``[128, 128, 3]``, ``[128, 128]``, ``[68, 2]``) in the context of donor number ``donor``
        (``refine``: the seamless composition, else the plain one)."""
        image, donor_mask, valid = self.donor(donor)
        how = compose_refined if refine else compose
        out = how(aligned, mask, landmarks, image, donor_mask, self.landmarks[donor], valid, self.config)
        return DonorResult(out, self.image_ids[donor], str(self.identities[donor]), float(distance))


def _build(shards: list[Path], config: DonorConfig) -> tuple[dict[str, np.ndarray], list]:
    """Describe every usable face of ``shards``: the saved arrays and each donor's PNGs."""
    from augmentor.parquet import REDO_PREPROCESS, read_schema, read_table
    from augmentor.preprocessing.shards import decode_mask, decode_png

    wanted = ["image_id", "identity", "status", "aligned", "mask", "landmarks", "border_fraction", "valid"]
    features, landmarks, context, shard_of, row_of, ids, identities, pixels = [], [], [], [], [], [], [], []
    skipped = {"border": 0, "padded": 0, "context": 0}
    for s, path in enumerate(shards):
        names = read_schema(path, REDO_PREPROCESS).names  # a corrupt shard is named, with how to redo it
        columns = read_table(path, [c for c in [*wanted, "padded_fraction"] if c in names], REDO_PREPROCESS).to_pydict()
        for i, status in enumerate(columns["status"]):
            if status != "ok":
                continue
            if (columns["border_fraction"][i] or 0.0) > config.max_border_fraction:
                skipped["border"] += 1
                continue
            if _padded(columns, i) > config.max_padded_fraction:
                skipped["padded"] += 1
                continue
            valid_png = columns.get("valid", [None] * (i + 1))[i]
            image, mask, valid = (
                decode_png(columns["aligned"][i]),
                decode_mask(columns["mask"][i]),
                _decode_valid(valid_png),
            )
            share = context_valid_share(mask, valid)
            if share < config.min_context_valid:
                skipped["context"] += 1
                continue
            points = np.asarray(columns["landmarks"][i], np.float32).reshape(68, 2)
            features.append(describe(image, mask, points, config.ring_width))
            landmarks.append(points)
            context.append(share)
            shard_of.append(s)
            row_of.append(i)
            ids.append(str(columns["image_id"][i]))
            identities.append(str(columns["identity"][i]))
            pixels.append((columns["aligned"][i], columns["mask"][i], valid_png))
    if not features:
        raise InputError(f"no face of {shards[0].parent} can be a donor (skipped: {skipped})")
    log.info("donor bank built: %d donors, skipped %s", len(features), skipped)
    arrays: dict[str, np.ndarray] = {
        "features": np.stack(features).astype(np.float32),
        "landmarks": np.stack(landmarks).astype(np.float32),
        "context_valid": np.asarray(context, np.float32),
        "shard": np.asarray(shard_of, np.int32),
        "row": np.asarray(row_of, np.int32),
        "image_id": np.asarray(ids, dtype=str),
        "identity": np.asarray(identities, dtype=str),
    }
    if config.appearance:
        arrays["appearance"] = _appearance(pixels, arrays["landmarks"])
    return arrays, pixels


def _appearance(pixels: list, landmarks: np.ndarray, batch: int = 256) -> np.ndarray:
    """Appearance descriptors ``[M, 128]`` of every donor, decoding its PNGs again a batch at a time."""
    from augmentor.donors.appearance import AppearanceDescriber
    from augmentor.preprocessing.shards import decode_mask, decode_png

    describer = AppearanceDescriber()
    out = np.zeros((len(pixels), 128), np.float32)
    for start in range(0, len(pixels), batch):
        part = pixels[start : start + batch]
        images = np.stack([decode_png(p[0]) for p in part])
        masks = np.stack([decode_mask(p[1]) for p in part])
        out[start : start + len(part)] = describer(images, masks, landmarks[start : start + len(part)])
        log.info("appearance descriptors: %d of %d donors", start + len(part), len(pixels))
    return out


def _read_pixels(shards: list[Path], arrays: dict[str, np.ndarray]) -> list[tuple[bytes, bytes, bytes | None]]:
    """The PNGs of every saved donor, read from its shard row (and checked against its image id)."""
    from augmentor.parquet import REDO_PREPROCESS, read_schema, read_table

    pixels: list = [None] * len(arrays["row"])
    for s, path in enumerate(shards):
        where = np.flatnonzero(arrays["shard"] == s)
        if not len(where):
            continue
        names = read_schema(path, REDO_PREPROCESS).names
        table = read_table(path, [c for c in ("image_id", "aligned", "mask", "valid") if c in names], REDO_PREPROCESS)
        table = table.take(arrays["row"][where])
        columns = table.to_pydict()
        for j, i in enumerate(where):
            if columns["image_id"][j] != arrays["image_id"][i]:
                raise InputError(f"{path} changed since the donor bank was built; delete {BANK_DIR}/ to rebuild it")
            valid = columns["valid"][j] if "valid" in columns else None
            pixels[i] = (columns["aligned"][j], columns["mask"][j], valid)
    return pixels


def _save(bank_dir: Path, arrays: dict[str, np.ndarray], shards: list[Path], config: DonorConfig, bank: str) -> None:
    """Write the bank into a temporary folder, then rename it into place (a reader never sees half a bank)."""
    tmp = bank_dir.with_name(f".{bank_dir.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        np.savez(tmp / FEATURES_FILE, **arrays)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "id": bank,
            "shards": os.path.relpath(shards[0].parent, bank_dir),
            "count": len(arrays["features"]),
            "bank": config.bank_key(),
            "appearance": "appearance" in arrays,
            "sources": _sources(shards),
        }
        (tmp / BANK_FILE).write_text(json.dumps(meta, indent=2))
        if bank_dir.exists():
            shutil.rmtree(bank_dir)
        os.replace(tmp, bank_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("donor bank saved: %s (%d donors)", bank_dir, len(arrays["features"]))

"""A compact copy of a preprocess output for the GPU machines, which take a few dozen MiB of untracked files and
have no cv2, dlib or face-recognition-models.

A pack folder holds what training needs and nothing else:

- ``faces.parquet``: one row per usable face: ``image_id``, ``identity``, ``border_fraction``, ``mask_area``,
  ``padded_fraction`` (where the listing had it), ``valid`` (the validity-mask PNG, null = all valid), ``aligned`` (the 128x128 crop as WebP or JPEG) and ``mask``
  (a 1-bit PNG, 255 = face). The column names are the preprocess shards', so :func:`augmentor.training.data.load_faces`
  reads either.
- ``identity.safetensors``: the dlib face-recognition ResNet of the identity and face-perceptual losses, in fp16;
  :meth:`augmentor.identity.network.DlibResNet.from_file` loads it as float32.
- ``pack.json``: the settings, the file sizes and the measured compression error.

Train on it with ``--data pack --set loss.identity_weights=pack/identity.safetensors`` (see docs/gpu-training.md).
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from augmentor.errors import InputError
from augmentor.preprocessing.shards import PACK_FILE, decode_mask, decode_png, read_shards
from augmentor.training.data import fingerprint, usable_rows

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.safetensors"
SUMMARY_FILE = "pack.json"
PACK_FORMAT = "augmentor-pack"
PACK_VERSION = 1
PIL_FORMATS = {"webp": "WEBP", "jpeg": "JPEG"}
KEPT_COLUMNS = ("image_id", "identity", "border_fraction", "mask_area", "padded_fraction", "valid")  # if present
WEBP_METHOD = 4  # Pillow's default; 6 is 4% smaller, 2.5x slower and no closer to the original


@dataclass
class PackConfig:
    """How a pack is encoded and filtered."""

    image_format: Literal["webp", "jpeg"] = "webp"  # CelebA, q90: WebP 4.5 KiB/face, MAE 2.0; JPEG 5.8 KiB, MAE 2.4
    quality: int = 92  # 90..100; WebP on CelebA: q92 5.1 KiB/face, MAE 1.8 grey levels; q95 6.2 KiB, MAE 1.5
    max_padded_fraction: float = 1.0  # drop rows as DataConfig.max_padded_fraction does (1: keep all)
    identity_weights: str | None = None  # the dlib .dat to convert; None: the face-recognition-models copy


@dataclass
class PackSummary:
    """What :func:`build_pack` wrote; also saved as ``pack.json``."""

    out: str
    source: str
    rows: int  # faces in the pack
    dropped: int  # ok rows left out by max_padded_fraction
    mean_abs_error: float  # of the decoded crops against the PNG originals, in grey levels (0..255)
    fingerprint: str  # sha256 of the sorted image ids, as training records it
    seconds: float
    file_bytes: dict[str, int] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def total_mib(self) -> float:
        return sum(self.file_bytes.values()) / 2**20


def encode_pack_image(array: np.ndarray, image_format: str, quality: int) -> bytes:
    """WebP or JPEG bytes of an ``[H, W, 3]`` uint8 RGB array."""
    from PIL import Image

    options = {"method": WEBP_METHOD} if image_format == "webp" else {"optimize": True}
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, PIL_FORMATS[image_format], quality=quality, **options)
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """1-bit PNG of an ``[H, W]`` mask in {0, 1}; :func:`augmentor.preprocessing.shards.decode_mask` reads it back exactly."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(bool)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def save_identity_weights(path: str | Path, dat: str | Path | None = None) -> Path:
    """Convert dlib's face-recognition ResNet ``.dat`` to fp16 safetensors (``input_mean`` stays float32).

    Raises:
        MissingModelFileError: no ``.dat`` file.
        InputError: the ``.dat`` is not that network, or a weight does not fit in fp16.
    """
    from safetensors.torch import save_file

    from augmentor.identity.network import DAT_FILE, read_dlib_resnet

    state = {}
    for name, array in read_dlib_resnet(dat).items():
        tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
        state[name] = tensor if name == "input_mean" else tensor.to(torch.float16)
        if not torch.isfinite(state[name]).all():
            raise InputError(f"{name} overflows fp16")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={"format": "dlib-face-resnet", "source": DAT_FILE, "dtype": "float16"})
    tmp.replace(path)
    return path


def build_pack(source: str | Path, out: str | Path, config: PackConfig | None = None) -> PackSummary:
    """Write ``faces.parquet``, ``identity.safetensors`` and ``pack.json`` for the ``ok`` rows of ``source``.

    Args:
        source: An ``augmentor preprocess`` output folder.
        out: The pack folder (created; its files are replaced).
        config: Encoding and filtering.

    Raises:
        FileNotFoundError: no shards in ``source``.
        InputError: no row left after filtering, or a bad setting.
        MissingModelFileError: no dlib ``.dat`` to convert.
    """
    config = config or PackConfig()
    if config.image_format not in PIL_FORMATS:
        raise InputError(f"image_format must be one of {sorted(PIL_FORMATS)}, not {config.image_format!r}")
    if not 90 <= config.quality <= 100:
        raise InputError(f"quality must be in 90..100, not {config.quality}")
    start = time.perf_counter()
    table = read_shards(source, status="ok")
    keep = usable_rows(table, max_padded_fraction=config.max_padded_fraction)
    table = table.filter(keep)
    if table.num_rows == 0:
        raise InputError(f"no faces left in {source} after filtering")
    images, masks, error_sum = [], [], 0.0
    for aligned, mask in zip(table["aligned"].to_pylist(), table["mask"].to_pylist(), strict=True):
        original = decode_png(aligned)  # [S, S, 3] uint8
        encoded = encode_pack_image(original, config.image_format, config.quality)
        error_sum += float(np.abs(decode_png(encoded).astype(np.int16) - original).mean())
        images.append(encoded)
        masks.append(encode_mask(decode_mask(mask)))
    columns = {name: table[name] for name in KEPT_COLUMNS if name in table.column_names}
    faces = pa.table({**columns, "aligned": pa.array(images, pa.binary()), "mask": pa.array(masks, pa.binary())})
    ids = [str(i) for i in table["image_id"].to_pylist()]
    summary = PackSummary(
        out=str(out),
        source=str(source),
        rows=table.num_rows,
        dropped=int((~keep).sum()),
        mean_abs_error=round(error_sum / table.num_rows, 4),
        fingerprint=fingerprint(ids),
        seconds=0.0,
        config=asdict(config),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": PACK_FORMAT, "version": PACK_VERSION, **asdict(config)}
    faces = faces.replace_schema_metadata({"augmentor_pack": json.dumps(meta)})
    tmp = out / f".{PACK_FILE}.tmp"
    pq.write_table(faces, tmp, compression="zstd")
    tmp.replace(out / PACK_FILE)
    save_identity_weights(out / IDENTITY_FILE, config.identity_weights)
    summary.seconds = round(time.perf_counter() - start, 2)
    summary.file_bytes = {name: (out / name).stat().st_size for name in (PACK_FILE, IDENTITY_FILE)}
    (out / SUMMARY_FILE).write_text(json.dumps({**asdict(summary), "total_mib": round(summary.total_mib, 2)}, indent=2))
    for name, size in summary.file_bytes.items():
        log.info("%s: %.2f MiB", out / name, size / 2**20)
    log.info(
        "packed %d faces (%d dropped) into %s: %.2f MiB, %s q%d, mean abs error %.2f grey levels, %.1f s",
        summary.rows,
        summary.dropped,
        out,
        summary.total_mib,
        config.image_format,
        config.quality,
        summary.mean_abs_error,
        summary.seconds,
    )
    return summary

"""The Parquet shard format written by ``augmentor preprocess`` and read by training and evaluation.

One row per input image. Columns (one pyarrow schema, :data:`SHARD_SCHEMA`, plus any extra columns the
dataset listing carried, such as CelebA's ``padded_fraction``):

=================  ==========================  ======================================================
column             type                        meaning
=================  ==========================  ======================================================
image_id           string                      unique id within the dataset
identity           string                      source identity label
source_path        string                      the input file
status             string                      ``ok`` / ``no_face`` / ``error``
reason             string                      ``code: detail`` when status is not ok, else ""
aligned            binary (PNG), null if fail  the 128x128 RGB aligned crop
mask               binary (PNG), null if fail  the 128x128 face mask, 255 = face, 0 = to hallucinate
landmarks          fixed list<float32>[136]    the 68 aligned landmarks, x0, y0, x1, y1, ...
mask_area          float32                     share of the crop inside the face hull
border_fraction    float32                     share of the crop that lay outside the source image
valid              binary (PNG), nullable      255 = inside the source photo, 0 = reflection fill (no loss
                                               there); null when the whole crop is inside the photo
=================  ==========================  ======================================================

An ``augmentor pack`` folder (:mod:`augmentor.training.pack`) holds the ``ok`` rows alone in one ``faces.parquet``, with the
crop as WebP or JPEG; :func:`read_faces` reads either layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augmentor.parquet import REDO_PACK, REDO_PREPROCESS, read_table

SHARD_GLOB = "part-*.parquet"
PACK_FILE = "faces.parquet"  # the face table of an `augmentor pack` folder

SHARD_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("identity", pa.string()),
        ("source_path", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("aligned", pa.binary()),
        ("mask", pa.binary()),
        ("landmarks", pa.list_(pa.float32(), 136)),
        ("mask_area", pa.float32()),
        ("border_fraction", pa.float32()),
        ("valid", pa.binary()),
    ]
)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an ``[H, W, 3]`` RGB or ``[H, W]`` grey uint8 array."""
    import cv2

    if array.ndim == 3:
        array = array[..., ::-1]  # cv2 writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes, grey: bool = False) -> np.ndarray:
    """Inverse of :func:`encode_png`: ``[H, W, 3]`` RGB or ``[H, W]`` uint8.

    Also decodes the WebP/JPEG images of an ``augmentor pack``. Uses cv2 where it is installed, else PIL (the GPU
    machines have no cv2).

    Raises:
        ValueError: the bytes are not a decodable image.
    """
    try:
        import cv2
    except ImportError:
        return _decode_pil(data, grey)
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if array is None:
        raise ValueError("not a decodable image")
    return array if grey else np.ascontiguousarray(array[..., ::-1])


def _decode_pil(data: bytes, grey: bool) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("not a decodable image") from exc


def decode_mask(data: bytes) -> np.ndarray:
    """A stored mask as ``[H, W]`` uint8 in {0, 1}."""
    return (decode_png(data, grey=True) > 127).astype(np.uint8)


def decode_valid(data: bytes | None, size: int) -> np.ndarray:
    """A stored validity mask as ``[H, W]`` uint8 in {0, 1}; null (older shards, or a crop inside the photo) is all 1."""
    if data is None:
        return np.ones((size, size), np.uint8)
    return decode_mask(data)


def shard_paths(directory: str | Path) -> list[Path]:
    """The completed shards in ``directory``, in name order."""
    return sorted(Path(directory).glob(SHARD_GLOB))


def read_shards(directory: str | Path, columns: list[str] | None = None, status: str | None = None) -> pa.Table:
    """Read every completed shard of a preprocess output folder into one table.

    Args:
        directory: The ``--out`` folder of ``augmentor preprocess``.
        columns: Columns to read (all by default).
        status: Keep only rows with this status (e.g. ``"ok"``).

    Raises:
        FileNotFoundError: the folder holds no shard.
        augmentor.parquet.CorruptFileError: a shard cannot be read (the message names it and how to redo it).
    """
    paths = shard_paths(directory)
    if not paths:
        raise FileNotFoundError(f"no {SHARD_GLOB} shards in {directory}; run `augmentor preprocess` first")
    read_columns = None if columns is None else list(dict.fromkeys(columns + (["status"] if status else [])))
    tables = [read_table(p, read_columns, REDO_PREPROCESS) for p in paths]
    table = pa.concat_tables(tables, promote_options="default")
    if status is not None:
        table = table.filter(pc.equal(table["status"], status))
        if columns is not None and "status" not in columns:
            table = table.drop_columns(["status"])
    return table


def pack_file(path: str | Path) -> Path | None:
    """The pack face table that ``path`` names (the ``.parquet`` file or its folder); None for other folders."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return path
    return path / PACK_FILE if (path / PACK_FILE).is_file() else None


def read_faces(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The usable (``ok``) face rows of a preprocess folder or of a pack (its folder or its ``faces.parquet``).

    Raises:
        FileNotFoundError: ``path`` is neither.
    """
    packed = pack_file(path)
    if packed is not None:
        return read_table(packed, columns, REDO_PACK)
    if not shard_paths(path):
        raise FileNotFoundError(
            f"{path} holds neither {SHARD_GLOB} shards (run `augmentor preprocess`) nor a pack's {PACK_FILE} "
            "(run `augmentor pack`)"
        )
    return read_shards(path, columns=columns, status="ok")

"""Contact sheets of preprocess output, for people who would rather look than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augmentor.shards import decode_mask, decode_png, read_shards


def shard_preview(shard_dir: str | Path, out_path: str | Path, max_faces: int = 16, columns: int = 8) -> Path | None:
    """Write a PNG grid: for each of the first ``max_faces`` ok rows, the aligned crop over its masked input.

    Returns:
        The PNG path, or None when the folder holds no ok row.
    """
    from PIL import Image

    table = read_shards(shard_dir, columns=["aligned", "mask"], status="ok").slice(0, max_faces)
    if table.num_rows == 0:
        return None
    tiles = []
    for aligned, mask in zip(table["aligned"].to_pylist(), table["mask"].to_pylist()):
        image = decode_png(aligned)
        tiles.append(np.concatenate([image, image * decode_mask(mask)[..., None]], axis=0))
    size = tiles[0].shape
    while len(tiles) % columns and len(tiles) > columns:
        tiles.append(np.zeros(size, np.uint8))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    out_path = Path(out_path)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out_path)
    return out_path

"""A PNG contact sheet of a finished ``augmentor run``: what went in and what came out, for a few faces."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from augmentor.manifest import read_manifest
from augmentor.visualize import save_png, tile

log = logging.getLogger(__name__)

PREVIEW_FILE = "preview.png"


def write_preview(out_dir: str | Path, max_faces: int = 8, path: str | Path | None = None) -> Path | None:
    """Write ``<out>/preview.png``: one row per face, ``aligned original | masked input | copy 0 | copy 1 ...``.

    Faces are taken one per identity first (in manifest order), so that a small sheet shows many people. The
    original and the masked input are rebuilt from the source file with the same masker as the run.

    Args:
        out_dir: An ``augmentor run`` output folder.
        max_faces: Rows of the sheet.
        path: Where to write (default ``<out_dir>/preview.png``).

    Returns:
        The PNG path, or None when the run has no ``ok`` row.
    """
    from PIL import Image

    from augmentor.faces import FaceMasker

    out_dir = Path(out_dir)
    table = read_manifest(out_dir, ["image_id", "identity", "copy", "source_path", "output_path", "status"])
    frame = table.filter(pc.equal(table["status"], "ok")).to_pandas().sort_values(["image_id", "copy"], kind="stable")
    if frame.empty:
        return None
    firsts = frame.drop_duplicates("image_id")
    chosen = list(firsts.drop_duplicates("identity")["image_id"][:max_faces])
    chosen += [i for i in firsts["image_id"] if i not in chosen][: max_faces - len(chosen)]
    masker = FaceMasker()
    rows = []
    copies = int(frame["copy"].max()) + 1
    for image_id in chosen:
        rows_of = frame[frame["image_id"] == image_id]
        face = masker(str(rows_of["source_path"].iloc[0]))
        if not face.ok:  # the source changed since the run
            log.warning("preview: %s no longer masks (%s); skipped", image_id, face.reason)
            continue
        tiles = [face.aligned, face.masked]
        for output in rows_of["output_path"]:
            tiles.append(np.asarray(Image.open(out_dir / output).convert("RGB")))
        tiles += [np.zeros_like(face.aligned)] * (copies + 2 - len(tiles))
        rows.append(tiles)
    if not rows:
        return None
    target = Path(path) if path else out_dir / PREVIEW_FILE
    save_png(tile(rows), target)
    log.info("preview of %d faces: %s", len(rows), target)
    return target

"""Windows on the face edge, where a composite's seams, halos and second jaw lines show.

Each window has one size for every image (a CNN judges them as a batch) and is placed by the image's own face
mask, so it follows the face wherever the alignment put it:

- ``jaw``: the jaw and chin line and the neck below it, 40 x 80 px, from 24 px above the mask's lowest row to
  16 px below it, centred on the lower third of the mask;
- ``forehead``: the brows, the forehead above them and the hairline, 40 x 80 px, from 24 px above the mask's top
  row to 16 px below it, centred on the upper third of the mask.

On our 128 px eye-aligned crop the jaw window lands near rows 84-124, cols 24-104 (the window the issue's probe
used); ``whole`` is the full crop.
"""

from __future__ import annotations

import numpy as np

REGIONS = ("whole", "jaw", "forehead")  # judged regions, in report order
WINDOW = (40, 80)  # (rows, cols) of an edge window
# rows above and below the anchoring mask row (jaw: its lowest row; forehead: its top row)
OFFSETS = {"jaw": (24, 16), "forehead": (24, 16)}


def _centre_column(mask: np.ndarray, rows: slice) -> float:
    part = mask[rows]
    cols = np.nonzero(part.any(axis=0))[0]
    if not len(cols):
        cols = np.nonzero(mask.any(axis=0))[0]
    return float(cols.min() + cols.max()) / 2


def window_origin(mask: np.ndarray, region: str) -> tuple[int, int]:
    """``(top, left)`` of the ``region`` window of one ``[H, W]`` face mask, kept inside the image.

    Raises:
        ValueError: an empty mask, an unknown region, or an image smaller than the window.
    """
    if region not in OFFSETS:
        raise ValueError(f"unknown edge region {region!r}; expected one of {tuple(OFFSETS)}")
    height, width = mask.shape
    if height < WINDOW[0] or width < WINDOW[1]:
        raise ValueError(f"a {height}x{width} image is smaller than the {WINDOW[0]}x{WINDOW[1]} edge window")
    rows = np.nonzero(np.asarray(mask).any(axis=1))[0]
    if not len(rows):
        raise ValueError("an empty face mask has no edge to judge")
    top_row, bottom_row = int(rows.min()), int(rows.max())
    third = max(1, (bottom_row - top_row + 1) // 3)
    above, _ = OFFSETS[region]
    if region == "jaw":
        anchor, centre = bottom_row, _centre_column(mask, slice(bottom_row - third + 1, bottom_row + 1))
    else:
        anchor, centre = top_row, _centre_column(mask, slice(top_row, top_row + third))
    top = int(np.clip(anchor - above, 0, height - WINDOW[0]))
    left = int(np.clip(round(centre - WINDOW[1] / 2), 0, width - WINDOW[1]))
    return top, left


def crop_region(images: np.ndarray, masks: np.ndarray, region: str) -> np.ndarray:
    """The ``region`` of every image: ``[N, H, W, 3]`` itself for ``whole``, else ``[N, 40, 80, 3]`` windows placed
    by each image's ``[N, H, W]`` mask."""
    if region == "whole":
        return images
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    out = np.empty((len(images), *WINDOW, images.shape[-1]), images.dtype)
    for i, (image, mask) in enumerate(zip(images, masks)):
        top, left = window_origin(mask, region)
        out[i] = image[top : top + WINDOW[0], left : left + WINDOW[1]]
    return out

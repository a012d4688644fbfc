"""Classical fills of the masked background, scored beside the models in every evaluation run."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]


def black(masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The masked input itself (black background): the floor of every metric."""
    return masked * mask[..., None]


def mean_colour(masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Background filled with the mean colour of the face pixels."""
    inside = mask.astype(bool)
    colour = masked[inside].mean(axis=0) if inside.any() else np.zeros(3)
    out = np.empty_like(masked)
    out[:] = np.round(colour).astype(np.uint8)
    out[inside] = masked[inside]
    return out


def _inpaint(masked: np.ndarray, mask: np.ndarray, method: int, radius: int) -> np.ndarray:
    import cv2

    holes = (mask == 0).astype(np.uint8)
    out = cv2.inpaint(np.ascontiguousarray(masked), holes, radius, method)
    inside = mask.astype(bool)
    out[inside] = masked[inside]  # cv2 leaves known pixels alone; make it explicit
    return out


def navier_stokes(masked: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """OpenCV's Navier-Stokes inpainting (Bertalmio, Bertozzi and Sapiro 2001), ``cv2.INPAINT_NS``."""
    import cv2

    return _inpaint(masked, mask, cv2.INPAINT_NS, radius)


def telea(masked: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """OpenCV's fast-marching inpainting (Telea 2004), ``cv2.INPAINT_TELEA``."""
    import cv2

    return _inpaint(masked, mask, cv2.INPAINT_TELEA, radius)


BASELINES: dict[str, Fill] = {
    "black mask": black,
    "mean-colour fill": mean_colour,
    "cv2 Navier-Stokes": navier_stokes,
    "cv2 Telea": telea,
}


def fill_all(fill: Fill, masked: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Apply a fill to a batch ``[B, S, S, 3]`` / ``[B, S, S]``."""
    return np.stack([fill(m, k) for m, k in zip(masked, masks)])

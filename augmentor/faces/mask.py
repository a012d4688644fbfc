"""The convex-hull face mask (the cascade builds its input pyramid from it: ``augmentor.models.input_pyramid``)."""

from __future__ import annotations

import numpy as np


def hull_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Filled convex hull of ``[68, 2]`` landmarks as a ``[size, size]`` uint8 mask in {0, 1}."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask

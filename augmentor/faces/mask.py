"""The convex-hull face mask and the multi-scale pyramid the cascade consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESOLUTIONS = (8, 16, 32, 64, 128)


def hull_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Filled convex hull of ``[68, 2]`` landmarks as a ``[size, size]`` uint8 mask in {0, 1}."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def apply_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image * mask``: pixels outside the face become 0."""
    return image * mask[..., None].astype(image.dtype)


@dataclass
class PyramidLevel:
    """One resolution of the pyramid."""

    image: np.ndarray  # [N, N, 3] uint8, the aligned image at this resolution
    masked: np.ndarray  # [N, N, 3] uint8, image * mask
    mask: np.ndarray  # [N, N] uint8 in {0, 1}


def _halve(array: np.ndarray) -> np.ndarray:
    import cv2

    # At exactly half size, bilinear resampling averages each 2x2 block.
    return cv2.resize(array, (array.shape[1] // 2, array.shape[0] // 2), interpolation=cv2.INTER_LINEAR)


def pyramid(image: np.ndarray, mask: np.ndarray, resolutions: tuple[int, ...] = RESOLUTIONS) -> dict[int, PyramidLevel]:
    """Bilinear pyramid of the aligned image and its mask, by repeated halving from the full size.

    The image is halved bilinearly. The mask is halved as a float and thresholded at 0.5, so it stays
    binary at every level, and the masked image is ``image * mask`` at every level: a block that pastes
    its input's face pixels back gets exactly these.

    Args:
        image: ``[S, S, 3]`` uint8 aligned image, S the largest resolution.
        mask: ``[S, S]`` {0, 1} mask.
        resolutions: Sizes to return; each must be S divided by a power of two.
    """
    size = image.shape[0]
    if image.shape[:2] != (size, size) or mask.shape != (size, size):
        raise ValueError(f"expected a square image and mask of one size, got {image.shape} and {mask.shape}")
    wanted = set(resolutions)
    if any(size % r or (size // r) & (size // r - 1) for r in wanted):
        raise ValueError(f"every resolution in {sorted(wanted)} must be {size} divided by a power of two")
    levels: dict[int, PyramidLevel] = {}
    img, soft = image, mask.astype(np.float32)
    while True:
        n = img.shape[0]
        binary = (soft >= 0.5).astype(np.uint8)
        if n in wanted:
            levels[n] = PyramidLevel(image=img, masked=apply_mask(img, binary), mask=binary)
        if n <= min(wanted):
            break
        img, soft = _halve(img), _halve(soft)
    return dict(sorted(levels.items()))

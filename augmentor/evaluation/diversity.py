"""How different a method's K copies of one face are, over the context pixels (everything outside the face mask).

A method whose copies barely differ makes ``--copies`` useless: K copies then add K times the same context.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np


def pairwise_context_difference(copies: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean absolute difference in grey levels (0-255, averaged over RGB) between every two copies of a face,
    over its context pixels: ``[N]``.

    Args:
        copies: uint8 ``[K, N, S, S, 3]``, K >= 2.
        masks: ``[N, S, S]``, nonzero = face.

    Raises:
        ValueError: fewer than two copies, or mismatched shapes.
    """
    copies = np.asarray(copies)
    if copies.ndim != 5 or len(copies) < 2 or copies.shape[1:4] != masks.shape:
        raise ValueError(f"expected [K >= 2, N, S, S, 3] copies and [N, S, S] masks, got {copies.shape}, {masks.shape}")
    context = (np.asarray(masks) == 0).astype(np.float64)  # [N, S, S]
    area = np.maximum(context.sum(axis=(1, 2)), 1.0)
    total = np.zeros(copies.shape[1])
    pairs = list(combinations(range(len(copies)), 2))
    for a, b in pairs:
        diff = np.abs(copies[a].astype(np.int16) - copies[b].astype(np.int16)).mean(axis=-1)  # [N, S, S]
        total += (diff * context).sum(axis=(1, 2)) / area
    return total / len(pairs)


def pairwise_descriptor_distance(
    copies: np.ndarray, masks: np.ndarray, describe: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Mean L2 distance between every two copies' descriptors of the context alone (face pixels set to 0): ``[N]``.

    Args:
        copies: uint8 ``[K, N, S, S, 3]``, K >= 2.
        masks: ``[N, S, S]``, nonzero = face.
        describe: uint8 ``[N, S, S, 3]`` -> ``[N, D]`` features (e.g. the dlib-ResNet descriptor).
    """
    keep = (np.asarray(masks) == 0)[..., None].astype(np.uint8)
    features = [np.asarray(describe(copy * keep), np.float64) for copy in copies]
    pairs = list(combinations(range(len(copies)), 2))
    return sum(np.linalg.norm(features[a] - features[b], axis=1) for a, b in pairs) / len(pairs)

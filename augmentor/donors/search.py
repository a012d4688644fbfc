"""Nearest donors by weighted feature distance, never of the target's own identity. Plain numpy: a bank of 10k
faces against a batch of 64 targets is a [64, 10k] distance matrix, a few ms."""

from __future__ import annotations

import numpy as np

from augmentor.donors.config import DonorConfig
from augmentor.donors.features import COLOUR, NUM_FEATURES, POSE, SHAPE
from augmentor.errors import InputError


def feature_weights(config: DonorConfig) -> np.ndarray:
    """Per-feature multipliers ``[NUM_FEATURES]``: each group's mean squared distance, in its scale, times its weight.

    With features multiplied by these, the plain squared Euclidean distance is
    ``sum_g weight_g * mean_{i in g} ((a_i - b_i) / scale_g) ** 2``.
    """
    weights = np.zeros(NUM_FEATURES, np.float64)
    for group, weight, scale in (
        (COLOUR, config.colour_weight, config.colour_scale),
        (SHAPE, config.shape_weight, config.shape_scale),
        (POSE, config.pose_weight, config.pose_scale),
    ):
        size = group.stop - group.start
        weights[group] = np.sqrt(weight / size) / scale
    return weights


def nearest(
    queries: np.ndarray,
    donors: np.ndarray,
    penalty: np.ndarray,
    query_identities: list[str | None],
    donor_identities: np.ndarray,
    k: int,
    config: DonorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best donors of every query.

    Args:
        queries: ``[N, NUM_FEATURES]`` target features.
        donors: ``[M, NUM_FEATURES]`` bank features.
        penalty: ``[M]`` share of each donor's context outside its photo (times ``config.invalid_penalty``).
        query_identities: The targets' identities; ``""`` or None excludes nothing.
        donor_identities: ``[M]`` the donors' identities.
        k: Donors per query.

    Returns:
        ``(indices, distances)``, both ``[N, k]``, best first.

    Raises:
        ValueError: a query has fewer than ``k`` eligible donors.
    """
    weights = feature_weights(config)
    q, d = queries.astype(np.float64) * weights, donors.astype(np.float64) * weights
    squared = (q**2).sum(1)[:, None] + (d**2).sum(1)[None, :] - 2.0 * q @ d.T
    distance = np.sqrt(np.maximum(squared, 0.0)) + config.invalid_penalty * penalty[None, :]
    donor_identities = np.asarray(donor_identities, dtype=object)
    for i, identity in enumerate(query_identities):
        if identity:
            distance[i, donor_identities == identity] = np.inf
    eligible = np.isfinite(distance).sum(1)
    if len(eligible) and eligible.min() < k:
        raise InputError(f"{k} donors wanted, but a target has only {int(eligible.min())} of another identity")
    if k < distance.shape[1]:
        part = np.argpartition(distance, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(distance.shape[1]), (len(distance), 1))
    order = np.argsort(np.take_along_axis(distance, part, 1), axis=1, kind="stable")
    indices = np.take_along_axis(part, order, 1)
    return indices, np.take_along_axis(distance, indices, 1)

"""Copies as an augmentation: ``finetune --copy-probability p`` draws real crops and swaps some for a copy.

The default (union) mode trains on every real and hallucinated row alike, so with K copies per face a real crop
is drawn about ``1 / (K + 1)`` as often as in the real-only arm. Here, as training pipelines apply an
augmentation, an epoch is one pass over the **real** training crops, and each drawn crop is replaced, with
probability ``p``, by one of the copies of the same image (same ``image_id`` and ``identity``), chosen uniformly.
Every arm then sees each real image exactly once per epoch; the arms differ only in what the copies are.

The order of the real crops depends only on ``(seed, epoch)`` and the real rows themselves, not on the copies, so
two arms trained with one seed draw the same real images in the same order (paired arms). The coin flips and the
choice among the copies come from a second stream of the same seed. A real crop with no copy stays real.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from augmentor.errors import InputError
from recognition.data import REAL

log = logging.getLogger(__name__)


class CopySampler(torch.utils.data.Sampler[int]):
    """Dataset rows for one epoch: each real row once (this worker's share), swapped for a copy with probability p.

    Args:
        real: ``[R]`` row indices of the real crops (table order).
        copies: ``R`` arrays, the row indices of each real crop's copies (empty: none).
        probability: ``p`` in [0, 1].
        seed: The run's seed; the epoch is set with :meth:`set_epoch`.
        rank, world_size: This worker's place in a data-parallel group: the epoch's order is cut to a multiple of
            ``world_size`` and worker ``rank`` takes every ``world_size``-th row, as ``DistributedSampler`` with
            ``drop_last``.
    """

    def __init__(
        self,
        real: np.ndarray,
        copies: list[np.ndarray],
        probability: float,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0.0 <= probability <= 1.0:
            raise InputError(f"copy probability {probability} is not in [0, 1]")
        if len(copies) != len(real):
            raise InputError(f"{len(real)} real rows but {len(copies)} copy lists")
        if len(real) == 0:
            raise InputError("--copy-probability draws real crops, and the training rows hold none")
        self.real = np.asarray(real, np.int64)
        self.num_copies = np.array([len(c) for c in copies], np.int64)  # [R]
        self.offsets = np.concatenate([[0], np.cumsum(self.num_copies)])  # [R + 1] into flat
        self.flat = np.concatenate([np.asarray(c, np.int64) for c in copies])  # [sum K] copy rows
        self.probability, self.seed, self.rank, self.world_size = probability, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.real) // self.world_size

    def draws(self) -> tuple[np.ndarray, np.ndarray]:
        """This worker's epoch: ``(real positions drawn [n], dataset rows [n])``; a row is the real one or a copy."""
        order = np.random.default_rng([self.seed, self.epoch, 0]).permutation(len(self.real))
        order = order[: len(self) * self.world_size]
        rng = np.random.default_rng([self.seed, self.epoch, 1])  # drawn for every real row, so each is independent
        swap = rng.random(len(self.real)) < self.probability  # of the worker split and the cut
        pick = np.floor(rng.random(len(self.real)) * np.maximum(self.num_copies, 1)).astype(np.int64)
        swapped = np.flatnonzero(swap & (self.num_copies > 0))
        rows = self.real.copy()
        rows[swapped] = self.flat[self.offsets[swapped] + pick[swapped]]
        mine = order[self.rank :: self.world_size]
        return mine, rows[mine]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draws()[1].tolist())


def copy_groups(table: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """The real rows of a training table and, for each, the rows of its copies (same ``image_id`` and ``identity``).

    Args:
        table: Rows with ``image_id``, ``identity`` and ``kind`` (``real`` or ``hallucinated``), e.g.
            :meth:`recognition.data.FaceData.train_rows`.

    Returns:
        ``([R] real row indices, R arrays of copy row indices)``, both in table order.
    """
    kind = table["kind"].to_numpy()
    keys = list(zip(table["image_id"].astype(str), table["identity"].astype(str), strict=True))
    real = np.flatnonzero(kind == REAL)
    by_key: dict[tuple[str, str], list[int]] = {}
    for i in np.flatnonzero(kind != REAL):
        by_key.setdefault(keys[i], []).append(int(i))
    copies = [np.array(by_key.get(keys[i], []), np.int64) for i in real]
    used = sum(len(c) for c in copies)
    if used < len(kind) - len(real):
        log.warning("%d copies have no real crop in the training rows: never drawn", len(kind) - len(real) - used)
    return real, copies


def copy_sampler(
    table: pd.DataFrame, probability: float, seed: int = 0, rank: int = 0, world_size: int = 1
) -> CopySampler:
    """A :class:`CopySampler` over a training table (see :func:`copy_groups`)."""
    real, copies = copy_groups(table)
    with_copies = sum(len(c) > 0 for c in copies)
    log.info(
        "copy probability %.3g: %d real crops per epoch, %d of them with copies (%d copies)",
        probability,
        len(real),
        with_copies,
        sum(len(c) for c in copies),
    )
    return CopySampler(real, copies, probability, seed, rank, world_size)

"""The typed result of masking one image, and the failure statuses."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Status(str, enum.Enum):
    """Outcome of masking one image."""

    OK = "ok"
    NO_FACE = "no_face"
    ERROR = "error"


class FaceError(Exception):
    """A per-image failure; turned into a :class:`MaskedFace` status, never raised out of a batch.

    Args:
        code: Short machine-readable reason (``unreadable``, ``truncated``, ``too_small``, ...).
        detail: Human-readable explanation.
        status: The status the failure maps to.
    """

    def __init__(self, code: str, detail: str, status: Status = Status.ERROR):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass
class MaskedFace:
    """One image after detection, alignment and masking.

    On failure only ``status`` and ``reason`` are set. ``reason`` starts with a short code
    (``no_face``, ``unreadable``, ``truncated``, ``not_an_image``, ``too_small``, ``too_large``,
    ``unsupported_mode``) followed by ``": "`` and details.
    """

    status: Status
    reason: str = ""
    aligned: np.ndarray | None = None  # [S, S, 3] uint8 RGB, the aligned crop
    mask: np.ndarray | None = None  # [S, S] uint8 in {0, 1}, 1 = face (kept) pixel
    landmarks: np.ndarray | None = None  # [68, 2] float32 (x, y) in aligned pixel coordinates
    transform: np.ndarray | None = None  # [2, 3] float64, source pixel -> aligned pixel
    box: tuple[int, int, int, int] | None = None  # detection (left, top, right, bottom) in source pixels
    border_fraction: float = 0.0  # share of the aligned crop that fell outside the source image
    valid: np.ndarray | None = None  # [S, S] uint8, 1 = inside the source photo, 0 = filled by reflection

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def masked(self) -> np.ndarray:
        """The aligned image with every pixel outside the face hull set to 0: ``[S, S, 3]`` uint8."""
        if self.aligned is None or self.mask is None:
            raise ValueError(f"no masked image: status is {self.status.value} ({self.reason})")
        return self.aligned * self.mask[..., None]

    @classmethod
    def failure(cls, err: FaceError) -> MaskedFace:
        return cls(status=err.status, reason=err.reason)

"""Face detection: dlib HOG by default, facenet-pytorch's MTCNN as an optional alternative."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from augmentor.errors import InputError
from augmentor.resources import MissingModelFileError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels
DETECT_MAX_SIDE = 800  # images are scaled down to this before detection; landmarks still use full resolution


class Detector(Protocol):
    def __call__(self, image: np.ndarray) -> list[Box]:
        """Return face boxes in ``image`` ([H, W, 3] uint8 RGB)."""
        ...


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def largest(boxes: list[Box]) -> Box | None:
    """The box with the largest area, or None."""
    return max(boxes, key=_area) if boxes else None


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    side = max(image.shape[:2])
    if side <= max_side:
        return image, 1.0
    scale = max_side / side
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, scale


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector.

    Tries ``upsample=0`` first and falls back to ``upsample=1`` only when nothing is found, which
    keeps the common case fast and still finds small faces.
    """

    def __init__(self, fallback_upsample: bool = True, max_side: int = DETECT_MAX_SIDE):
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.fallback_upsample = fallback_upsample
        self.max_side = max_side

    def __call__(self, image: np.ndarray) -> list[Box]:
        small, scale = _downscale(image, self.max_side)
        rects = self._detector(small, 0)
        if len(rects) == 0 and self.fallback_upsample:
            rects = self._detector(small, 1)
        return [
            (round(r.left() / scale), round(r.top() / scale), round(r.right() / scale), round(r.bottom() / scale))
            for r in rects
        ]


class MtcnnDetector:
    """facenet-pytorch's MTCNN (its weights ship inside the package). Optional: ``make install-mtcnn``."""

    def __init__(self, min_confidence: float = 0.9, max_side: int = DETECT_MAX_SIDE):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise MissingModelFileError(
                "the 'mtcnn' detector needs facenet-pytorch, which is not installed. Install it without its "
                "outdated pins: `pip install --no-deps facenet-pytorch` (or `make install-mtcnn`)."
            ) from exc
        self._mtcnn = MTCNN(keep_all=True, device="cpu")
        self.min_confidence = min_confidence
        self.max_side = max_side

    def __call__(self, image: np.ndarray) -> list[Box]:
        from PIL import Image

        small, scale = _downscale(image, self.max_side)
        boxes, probs = self._mtcnn.detect(Image.fromarray(small))
        if boxes is None:
            return []
        return [
            tuple(round(float(v) / scale) for v in box)  # type: ignore[misc]
            for box, prob in zip(boxes, probs)
            if prob is not None and prob >= self.min_confidence
        ]


DETECTORS = {"hog": HogDetector, "mtcnn": MtcnnDetector}


def make_detector(name: str, **kwargs) -> Detector:
    """Build a detector by name (``hog`` or ``mtcnn``)."""
    if name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name](**kwargs)

"""The masking pipeline: decode -> detect -> 68 landmarks -> align on the eyes -> convex-hull mask."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from augmentor.faces.align import Template, similarity_from_eyes, transform_points, warp
from augmentor.faces.detect import Box, largest, make_detector
from augmentor.faces.image_io import load_image
from augmentor.faces.landmarks import LandmarkPredictor, eye_centres
from augmentor.faces.mask import hull_mask
from augmentor.faces.result import FaceError, MaskedFace, Status

log = logging.getLogger(__name__)


@dataclass
class MaskingConfig:
    """How faces are found, aligned and masked."""

    detector: Literal["hog", "mtcnn"] = "hog"  # hog: dlib HOG (default); mtcnn: facenet-pytorch, optional
    upsample_fallback: bool = True  # HOG: retry with upsample=1 only when upsample=0 finds nothing
    template: Template = field(default_factory=Template)  # eye positions in the aligned crop
    landmark_model: str | None = None  # path of a 68-point dlib model; None = face-recognition-models' file


class FaceMasker:
    """Detects, aligns and masks faces. Build once per process: it loads the dlib models.

    Every per-image failure comes back as a :class:`MaskedFace` status with a reason; nothing raises.
    """

    def __init__(self, config: MaskingConfig | None = None):
        self.config = config or MaskingConfig()
        kwargs = {"fallback_upsample": self.config.upsample_fallback} if self.config.detector == "hog" else {}
        self.detector = make_detector(self.config.detector, **kwargs)
        self.landmarks = LandmarkPredictor(self.config.landmark_model)

    def __call__(self, source: str | Path | bytes | np.ndarray) -> MaskedFace:
        """Mask one image: a path, encoded bytes, or an ``[H, W, 3]`` uint8 RGB array."""
        try:
            image = source if isinstance(source, np.ndarray) else load_image(source)
            return self.mask_array(image)
        except FaceError as err:
            return MaskedFace.failure(err)
        except Exception as exc:  # a bad image must never kill a batch
            log.exception(
                "unexpected failure while masking %s", source if not isinstance(source, np.ndarray) else "array"
            )
            return MaskedFace(status=Status.ERROR, reason=f"internal: {type(exc).__name__}: {exc}")

    def mask_array(self, image: np.ndarray) -> MaskedFace:
        """Mask an ``[H, W, 3]`` uint8 RGB array.

        Raises:
            FaceError: no face was found, or the array is not an RGB image.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FaceError("unsupported_mode", f"expected [H, W, 3] uint8, got {image.shape} {image.dtype}")
        box = largest(self.detector(image))
        if box is None:
            raise FaceError("no_face", "no face detected", status=Status.NO_FACE)
        return self.align_and_mask(image, box)

    def align_and_mask(self, image: np.ndarray, box: Box) -> MaskedFace:
        """Landmarks, alignment and mask for a face already found at ``box``."""
        template = self.config.template
        points = self.landmarks(image, box)
        matrix = similarity_from_eyes(*eye_centres(points), template)
        aligned, valid = warp(image, matrix, template.size)
        aligned_points = transform_points(matrix, points).astype(np.float32)
        mask = hull_mask(aligned_points, template.size)
        if not mask.any():
            raise FaceError("no_face", "the landmark hull lies outside the aligned crop", status=Status.NO_FACE)
        return MaskedFace(
            status=Status.OK,
            aligned=aligned,
            mask=mask,
            landmarks=aligned_points,
            transform=matrix,
            box=box,
            border_fraction=1.0 - float(valid.mean()),
            valid=valid,
        )

"""Similarity alignment on the eye centres to a fixed square template."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augmentor.layout import CROP_SIZE


@dataclass(frozen=True)
class Template:
    """Where the eye centres land in the aligned crop (pixel coordinates, x right, y down).

    The default puts the eyes 26 px apart at y = 56 in a 128x128 crop: the face sits in the centre with
    forehead, hair, ears, neck and the top of the shoulders in frame (see docs/alignment.md). On LFW
    deep-funneled images (eyes about 41 px apart) this is a 0.63x view of a 202 px window, well inside
    the 250 px frame.
    """

    size: int = CROP_SIZE  # output side in pixels
    left_eye: tuple[float, float] = (51.0, 56.0)  # image-left eye centre (the subject's right eye)
    right_eye: tuple[float, float] = (77.0, 56.0)  # image-right eye centre

    def scaled(self, size: int) -> Template:
        """The same template at another output size."""
        k = size / self.size
        return Template(
            size, (self.left_eye[0] * k, self.left_eye[1] * k), (self.right_eye[0] * k, self.right_eye[1] * k)
        )


def similarity_from_eyes(left_eye: np.ndarray, right_eye: np.ndarray, template: Template) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, translation) taking the eyes to the template.

    Returns:
        ``[2, 3]`` float64 matrix M with ``aligned = M @ [x, y, 1]``.
    """
    src = np.asarray(right_eye, np.float64) - np.asarray(left_eye, np.float64)
    dst = np.asarray(template.right_eye, np.float64) - np.asarray(template.left_eye, np.float64)
    src_len = float(np.hypot(*src))
    if src_len < 1e-6:
        raise ValueError("the two eye centres coincide")
    scale = float(np.hypot(*dst)) / src_len
    angle = np.arctan2(dst[1], dst[0]) - np.arctan2(src[1], src[0])
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[a, -b], [b, a]])
    offset = np.asarray(template.left_eye, np.float64) - linear @ np.asarray(left_eye, np.float64)
    return np.hstack([linear, offset[:, None]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``[2, 3]`` affine matrix to ``[N, 2]`` points."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` into the ``size x size`` aligned frame.

    Pixels outside the source are filled by reflection (like the padded CelebA images). When the
    transform shrinks by more than 2x the source is first reduced with area averaging, to avoid aliasing.

    Returns:
        The aligned ``[size, size, 3]`` uint8 image and its validity mask, ``[size, size]`` uint8: 1 where the pixel
        comes from inside the source photo, 0 where it was filled by reflection (such pixels must carry no loss).
    """
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    src = image
    if scale < 0.5:
        factor = 2.0 * scale
        src = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        # The resized pixel centre (i + 0.5) / factor - 0.5 maps back to the original grid.
        pre = np.array([[1 / factor, 0, 0.5 / factor - 0.5], [0, 1 / factor, 0.5 / factor - 0.5], [0, 0, 1]])
        matrix = matrix @ pre
    aligned = cv2.warpAffine(src, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    inside = cv2.warpAffine(
        np.ones(src.shape[:2], np.uint8),
        matrix,
        (size, size),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return aligned, inside

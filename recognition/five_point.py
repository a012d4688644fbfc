"""Five-point alignment to insightface's arcface template, from our 68 landmarks: the input most face recognisers
trained on MS1M / Glint / WebFace expect (112 px, or the template scaled to another size).

Our aligned crop (:mod:`augmentor.faces.align`) is eye-aligned at 128 px with context around the face; the arcface
template is tighter (the eyes 35 px apart at 112 px). The chip is cut from the aligned crop, so a re-contexted crop
(``verify-lfw --context``) gives a re-contexted chip. The template and the size rule follow insightface's
``python-package/insightface/utils/face_align.py`` (``arcface_dst``, ``estimate_norm``); the similarity fit is
Umeyama's least-squares solution, as ``skimage.transform.SimilarityTransform.estimate`` computes it.
"""

from __future__ import annotations

import numpy as np

ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array(  # [5, 2] x, y at 112 px: image-left eye, image-right eye, nose tip, mouth corners
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float64,
)
EYE_68 = (slice(36, 42), slice(42, 48))  # image-left eye (the subject's right), image-right eye, in dlib's 68 points
NOSE_TIP_68, MOUTH_LEFT_68, MOUTH_RIGHT_68 = 30, 48, 54


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """``[68, 2]`` dlib landmarks -> ``[5, 2]``: the eye centres, the nose tip and the mouth corners."""
    points = np.asarray(landmarks, np.float64)
    return np.stack(
        [
            points[EYE_68[0]].mean(axis=0),
            points[EYE_68[1]].mean(axis=0),
            points[NOSE_TIP_68],
            points[MOUTH_LEFT_68],
            points[MOUTH_RIGHT_68],
        ]
    )


def template(size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ``[5, 2]`` template at ``size`` px: scaled for multiples of 112, else scaled from 128 and shifted right by
    8 px (insightface's ``estimate_norm`` rule, so a 128 px chip keeps the 112 px framing with a margin)."""
    if size % ARCFACE_SIZE == 0:
        ratio, shift = size / ARCFACE_SIZE, 0.0
    else:
        ratio = size / 128.0
        shift = 8.0 * ratio
    points = ARCFACE_TEMPLATE * ratio
    points[:, 0] += shift
    return points


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The ``[2, 3]`` similarity (rotation, uniform scale, translation) that maps ``src`` onto ``dst`` with the least
    squared error (Umeyama 1991, with the reflection check)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    variance = src_c.var(axis=0).sum()
    if variance < 1e-12:
        raise ValueError("the source points coincide")
    scale = float((s * d).sum() / variance)
    linear = scale * rotation
    return np.hstack([linear, (dst_mean - linear @ src_mean)[:, None]])


def five_point_matrix(landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ``[2, 3]`` transform from the aligned crop to the ``size`` px arcface chip."""
    return umeyama(five_points(landmarks), template(size))


def align_five_point(image: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """``[size, size, 3]`` uint8 arcface chip of ``image`` (``[H, W, 3]`` uint8), whose 68 landmarks are ``landmarks``.

    Pixels from outside ``image`` are black, as insightface's ``norm_crop`` leaves them.
    """
    import cv2

    matrix = five_point_matrix(landmarks, size)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)

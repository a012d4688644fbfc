"""Compact descriptions of an aligned face for donor search: border colour, face outline, pose. Numpy in, numpy out.

Every face is described by one float32 vector, :data:`NUM_FEATURES` long, in three groups:

- **colour** (15): the Lab mean of the ring just inside the face mask, in four sectors around the mask's centre
  (forehead, image-right cheek, chin, image-left cheek), then the ring's Lab standard deviation;
- **shape** (54): the jaw and eyebrow landmarks (0-26), whose hull is the mask's outline, in aligned pixels;
- **pose** (2): yaw and pitch proxies from the nose tip against the jaw and the eyes.

The groups are weighted at search time (:class:`augmentor.donors.config.DonorConfig`), so the stored vectors do
not depend on the weights.
"""

from __future__ import annotations

import numpy as np

OUTLINE = slice(0, 27)  # jaw (0-16) and eyebrows (17-26): the points on the mask's convex hull
NOSE_TIP, CHIN, JAW_LEFT, JAW_RIGHT = 30, 8, 0, 16
EYES = slice(36, 48)
NUM_SECTORS = 4
COLOUR = slice(0, 3 * NUM_SECTORS + 3)
SHAPE = slice(COLOUR.stop, COLOUR.stop + 2 * (OUTLINE.stop - OUTLINE.start))
POSE = slice(SHAPE.stop, SHAPE.stop + 2)
NUM_FEATURES = POSE.stop


def to_lab(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> float32 CIE Lab (L in 0..100, a and b about -128..127)."""
    import cv2

    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_lab`, rounded and clipped to uint8 RGB."""
    import cv2

    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def inner_ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Face pixels within ``width`` px of the mask's edge: ``[H, W]`` bool."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    inside = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (mask > 0) & (inside == 0)


def _sectors(mask: np.ndarray) -> np.ndarray:
    """Sector index (0 top, 1 right, 2 bottom, 3 left) of every pixel, by its angle about the mask's centroid."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (mask.shape[0] / 2, mask.shape[1] / 2)
    gy, gx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    angle = np.degrees(np.arctan2(gy - cy, gx - cx))  # 0 = right, 90 = down (image coordinates)
    return (((angle + 90 + 45) % 360) // 90).astype(np.int8)


def ring_colour(image: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """The colour group: Lab mean of the inner ring per sector (a sector without pixels takes the ring's mean),
    then the ring's Lab standard deviation. ``[15]`` float32."""
    lab = to_lab(image)
    ring = inner_ring(mask, width)
    if not ring.any():
        ring = mask > 0
    pixels = lab[ring]
    overall = pixels.mean(axis=0) if len(pixels) else np.zeros(3, np.float32)
    sectors = _sectors(mask)[ring]
    means = [pixels[sectors == s].mean(axis=0) if (sectors == s).any() else overall for s in range(NUM_SECTORS)]
    spread = pixels.std(axis=0) if len(pixels) else np.zeros(3, np.float32)
    return np.concatenate([*means, spread]).astype(np.float32)


def pose(landmarks: np.ndarray) -> np.ndarray:
    """Yaw and pitch proxies of ``[68, 2]`` landmarks: ``[2]`` float32.

    Yaw: the nose tip's offset from the jaw's midpoint, over the jaw's width (0 = frontal). Pitch: the nose tip's
    height between the eyes and the chin (about 0.45 frontal). Roll is zero after eye alignment.
    """
    jaw_mid = (landmarks[JAW_LEFT] + landmarks[JAW_RIGHT]) / 2
    width = max(float(landmarks[JAW_RIGHT, 0] - landmarks[JAW_LEFT, 0]), 1.0)
    eye_y = float(landmarks[EYES, 1].mean())
    height = max(float(landmarks[CHIN, 1]) - eye_y, 1.0)
    yaw = (landmarks[NOSE_TIP, 0] - jaw_mid[0]) / width
    pitch = (landmarks[NOSE_TIP, 1] - eye_y) / height
    return np.asarray([yaw, pitch], np.float32)


def describe(image: np.ndarray, mask: np.ndarray, landmarks: np.ndarray, ring_width: int) -> np.ndarray:
    """The feature vector of one aligned face: ``[NUM_FEATURES]`` float32 (colour, shape, pose)."""
    shape = np.asarray(landmarks[OUTLINE], np.float32).reshape(-1)
    return np.concatenate([ring_colour(image, mask, ring_width), shape, pose(landmarks)]).astype(np.float32)


def describe_all(images: np.ndarray, masks: np.ndarray, landmarks: np.ndarray, ring_width: int) -> np.ndarray:
    """:func:`describe` of ``[N, S, S, 3]`` faces: ``[N, NUM_FEATURES]`` float32."""
    out = np.zeros((len(images), NUM_FEATURES), np.float32)
    for i in range(len(images)):
        out[i] = describe(images[i], masks[i], landmarks[i], ring_width)
    return out


def context_valid_share(mask: np.ndarray, valid: np.ndarray) -> float:
    """Share of the context (outside the face mask) that lies inside the source photo (no reflection fill)."""
    context = mask == 0
    return float(valid[context].mean()) if context.any() else 1.0

"""Put a target face into a donor's context: fit, recolour, hide the donor's face edge, keep the face bit-exact.

For one target (aligned crop, face mask, landmarks) and one donor from the bank:

1. **Fit.** A similarity transform (clamped to small changes) takes the donor's jaw and eyebrow landmarks onto the
   target's, so the donor's face outline lands near the target's.
2. **Recolour.** The donor's context is shifted in Lab by the difference between the two faces' border rings
   (inside the masks): fully at the seam, partly far from it.
3. **Seam.** Pixels of the donor's own face that the target's mask does not cover (the band), and a few px of
   context all around the target's face, are re-solved by Poisson blending restricted to the context: the target's
   face pixels and the donor's context beyond are fixed boundary values, the donor's gradients guide the fill,
   except inside the band, where the guidance is zero so the donor's face edge leaves no trace.
4. The target's face pixels are copied back, so they stay bit-exact.
"""

from __future__ import annotations

import numpy as np

from augmentor.donors.config import DonorConfig
from augmentor.donors.features import OUTLINE, from_lab, inner_ring, to_lab

MAX_ROTATION_DEG = 10.0  # the fit's rotation is clamped to this


def fit_similarity(source: np.ndarray, target: np.ndarray, config: DonorConfig) -> np.ndarray:
    """Least-squares similarity taking ``source`` ``[P, 2]`` points onto ``target``, clamped to small changes.

    Returns:
        ``[2, 3]`` float64 matrix (identity when ``config.fit_outline`` is off).
    """
    if not config.fit_outline:
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    denominator = float((a**2).sum()) or 1.0
    # Complex-number form of the 2D Procrustes fit: z_dst ~ c * z_src, c = scale * e^{i angle}.
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    c = (np.conj(za) * zb).sum() / denominator
    scale = float(np.clip(abs(c), 1 - config.max_fit_scale, 1 + config.max_fit_scale))
    angle = float(np.clip(np.angle(c), -np.radians(MAX_ROTATION_DEG), np.radians(MAX_ROTATION_DEG)))
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = mu_d - linear @ mu_s
    moved = linear @ mu_s + shift - mu_s  # how far the outline's centre moves
    norm = float(np.hypot(*moved))
    if norm > config.max_fit_shift:
        shift -= moved * (1 - config.max_fit_shift / norm)
    return np.hstack([linear, shift[:, None]])


def warp_donor(
    image: np.ndarray, mask: np.ndarray, valid: np.ndarray, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The donor's crop, face mask and validity mask moved by ``matrix`` (same size; the crop reflects at edges)."""
    import cv2

    if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]):
        return image, mask, valid
    size = (image.shape[1], image.shape[0])
    image = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    nearest = {"flags": cv2.INTER_NEAREST, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    return image, cv2.warpAffine(mask, matrix, size, **nearest), cv2.warpAffine(valid, matrix, size, **nearest)


def colour_shift(
    target: np.ndarray, target_mask: np.ndarray, donor_lab: np.ndarray, donor_mask: np.ndarray, config: DonorConfig
) -> np.ndarray:
    """Lab shift ``[3]`` that brings the donor's border ring (inside its face) to the target's, clipped."""
    target_ring, donor_ring = inner_ring(target_mask, config.ring_width), inner_ring(donor_mask, config.ring_width)
    if not target_ring.any() or not donor_ring.any():
        return np.zeros(3, np.float32)
    delta = to_lab(target)[target_ring].mean(axis=0) - donor_lab[donor_ring].mean(axis=0)
    limit = np.array([config.max_lightness_shift, config.max_chroma_shift, config.max_chroma_shift])
    return np.clip(delta, -limit, limit).astype(np.float32)


def distance_from(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance in px of every pixel to the nearest pixel of ``mask`` (0 on it): ``[H, W]`` float32."""
    import cv2

    return cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)


def recolour(
    target: np.ndarray, target_mask: np.ndarray, donor: np.ndarray, donor_mask: np.ndarray, config: DonorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The donor's crop shifted in Lab towards the target's border colour: fully at the seam, ``colour_far`` of it
    far away. Returns ``(recoloured [S, S, 3] float64, distance [S, S] px to the target's face)``."""
    donor_lab = to_lab(donor)
    delta = colour_shift(target, target_mask, donor_lab, donor_mask, config)
    distance = distance_from(target_mask)
    share = config.colour_far + (config.colour_near - config.colour_far) * np.exp(-distance / config.colour_decay)
    return from_lab(donor_lab + share[..., None] * delta).astype(np.float64), distance


def poisson_fill(
    fixed: np.ndarray, guide: np.ndarray, region: np.ndarray, flat: np.ndarray
) -> np.ndarray:  # all [H, W, C] float / [H, W] bool
    """Solve the Poisson equation on ``region`` with Dirichlet values from ``fixed`` outside it.

    The guidance field is the gradient of ``guide``, set to zero on every edge that touches ``flat``. Image
    borders are Neumann (no flux).

    Returns:
        ``fixed`` with the ``region`` pixels replaced by the solution, float64.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    out = fixed.astype(np.float64).copy()
    ys, xs = np.nonzero(region)
    n = len(ys)
    if n == 0:
        return out
    h, w = region.shape
    index = np.full((h, w), -1, np.int64)
    index[ys, xs] = np.arange(n)
    guide = guide.astype(np.float64)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, fixed.shape[2]))
    rows, cols = [], []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        p = np.flatnonzero(inside)
        qy, qx = qy[inside], qx[inside]
        diagonal[p] += 1
        q_index = index[qy, qx]
        unknown = q_index >= 0
        rows.append(p[unknown])
        cols.append(q_index[unknown])
        rhs[p[~unknown]] += out[qy[~unknown], qx[~unknown]]
        gradient = guide[ys[p], xs[p]] - guide[qy, qx]
        gradient[flat[ys[p], xs[p]] | flat[qy, qx]] = 0.0
        np.add.at(rhs, p, gradient)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = coo_matrix(
        (
            np.concatenate([diagonal, -np.ones(len(rows))]),
            (np.concatenate([np.arange(n), rows]), np.concatenate([np.arange(n), cols])),
        ),
        shape=(n, n),
    ).tocsc()
    out[ys, xs] = splu(matrix).solve(rhs)
    return out


def compose(
    target: np.ndarray,
    target_mask: np.ndarray,
    target_landmarks: np.ndarray,
    donor: np.ndarray,
    donor_mask: np.ndarray,
    donor_landmarks: np.ndarray,
    donor_valid: np.ndarray | None = None,
    config: DonorConfig | None = None,
) -> np.ndarray:
    """The target's face in the donor's context: ``[S, S, 3]`` uint8, equal to ``target`` wherever the mask is 1.

    Args:
        target: ``[S, S, 3]`` uint8 aligned crop (only its face pixels are used).
        target_mask: ``[S, S]`` {0, 1}, 1 = face.
        target_landmarks: ``[68, 2]`` aligned landmarks.
        donor, donor_mask, donor_landmarks: The same for the donor.
        donor_valid: ``[S, S]`` {0, 1}, 1 = inside the donor's photo (None: all).
        config: See :class:`DonorConfig`.
    """
    import cv2

    config = config or DonorConfig()
    face = target_mask > 0
    valid = np.ones(donor_mask.shape, np.uint8) if donor_valid is None else donor_valid
    matrix = fit_similarity(donor_landmarks[OUTLINE], target_landmarks[OUTLINE], config)
    donor, donor_mask, _ = warp_donor(donor, donor_mask.astype(np.uint8), valid.astype(np.uint8), matrix)

    recoloured, distance = recolour(target, target_mask, donor, donor_mask, config)

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * config.band_dilation + 1,) * 2)
    band = (cv2.dilate(donor_mask, kernel) > 0) & ~face  # the donor's own face, where the target does not cover it
    region = (band | (distance <= config.seam_width)) & ~face
    fixed = np.where(face[..., None], target.astype(np.float64), recoloured)
    blended = poisson_fill(fixed, recoloured, region, band | face)  # no donor gradient across the seam
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[face] = target[face]
    return out

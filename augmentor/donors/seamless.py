"""The refined (seamless) donor composition: resample the donor once, fill only what must be filled, and blend
across the seam by frequency band.

For one target and one donor (see :func:`compose_refined`):

1. **Fit.** The similarity fit of :mod:`augmentor.donors.compose`, resampled once (bicubic). With
   ``warp_outline`` (off by default: the judge caught the bent context more easily), also a thin-plate-spline
   warp that takes the donor's jaw and eyebrow landmarks onto the target's (displacements clamped to ``max_warp``
   px and pinned to zero at the crop's border), in the same resampling.
2. **Recolour.** The same Lab shift from the two faces' border rings as the plain composition.
3. **Band.** What is left of the donor's own face outside the target's mask, grown by ``refined_band_dilation``
   (1 px, against the plain composition's 2), is filled by a membrane (Poisson, zero guidance).
4. **Seam.** A Laplacian-pyramid (multi-band) blend of the target's face into the donor's context: coarse bands
   mix over a wide zone, fine bands over a narrow one, so tone carries across the join while the donor's real
   texture stays sharp up to the face. The target's face pixels are then copied back bit-exact.
"""

from __future__ import annotations

import numpy as np

from augmentor.donors.config import DonorConfig
from augmentor.donors.features import OUTLINE

BORDER_ANCHORS = 5  # zero-displacement anchors per side of the crop (the warp leaves the border in place)
WARP_GRID = 32  # the warp field is solved on this grid and resized to the crop


def _border_points(size: int) -> np.ndarray:
    ticks = np.linspace(0, size - 1, BORDER_ANCHORS)
    top = np.stack([ticks, np.zeros_like(ticks)], 1)
    return np.concatenate([top, top[:, ::-1], np.stack([ticks, np.full_like(ticks, size - 1)], 1),
                           np.stack([np.full_like(ticks, size - 1), ticks], 1)])


def outline_field(donor_points: np.ndarray, target_points: np.ndarray, size: int, max_warp: float) -> np.ndarray:
    """Backward displacement ``[size, size, 2]`` (x, y) float32: output pixel ``p`` samples the donor at
    ``p + field[p]``. Exact at ``target_points`` (up to the ``max_warp`` clamp), zero on the crop's border."""
    from scipy.interpolate import RBFInterpolator

    shift = np.asarray(donor_points, np.float64) - np.asarray(target_points, np.float64)  # [P, 2]
    norm = np.linalg.norm(shift, axis=1, keepdims=True)
    shift = shift * np.minimum(1.0, max_warp / np.maximum(norm, 1e-9))
    border = _border_points(size)
    centres = np.concatenate([np.asarray(target_points, np.float64), border])
    values = np.concatenate([shift, np.zeros_like(border)])
    centres, unique = np.unique(centres.round(3), axis=0, return_index=True)
    spline = RBFInterpolator(centres, values[unique], kernel="thin_plate_spline", smoothing=1e-3)
    ticks = np.linspace(0, size - 1, WARP_GRID)
    grid = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2)  # (x, y)
    coarse = spline(grid).reshape(WARP_GRID, WARP_GRID, 2).astype(np.float32)
    import cv2

    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


def warp_outline(
    image: np.ndarray,
    mask: np.ndarray,
    matrix: np.ndarray,
    donor_points: np.ndarray,
    target_points: np.ndarray,
    max_warp: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The donor's crop and face mask moved by the similarity ``matrix`` and then bent so that ``donor_points``
    (already moved by ``matrix``) land on ``target_points``, in one resampling (bicubic), so the donor's texture is
    interpolated once. ``max_warp`` None: the similarity alone."""
    import cv2

    size = image.shape[0]
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    if max_warp is not None:
        field = outline_field(donor_points, target_points, size, max_warp)
        xs, ys = xs + field[..., 0], ys + field[..., 1]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64)).astype(np.float32)
    map_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    map_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    warped_mask = cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped, warped_mask


def multiband_blend(
    inside: np.ndarray, outside: np.ndarray, mask: np.ndarray, levels: int, fine_sigma: float = 0.0
) -> np.ndarray:
    """Laplacian-pyramid blend (Burt and Adelson 1983) of ``inside`` where ``mask`` is 1 and ``outside`` where it
    is 0: each band mixed with the mask blurred to that band's scale. ``[H, W, C]`` float in, float64 out.
    ``fine_sigma`` > 0: the finest band is mixed with the mask blurred by that many px instead of the hard mask."""
    import cv2

    def gaussian(x: np.ndarray) -> list[np.ndarray]:
        pyramid = [x]
        for _ in range(levels):
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        return pyramid

    def laplacian(x: np.ndarray) -> list[np.ndarray]:
        g = gaussian(x)
        bands = [g[i] - cv2.pyrUp(g[i + 1], dstsize=g[i].shape[1::-1]) for i in range(levels)]
        return [*bands, g[-1]]

    weights = gaussian(mask.astype(np.float64))
    if fine_sigma > 0:
        weights[0] = cv2.GaussianBlur(weights[0], (0, 0), fine_sigma)
    blended = [
        w[..., None] * a + (1 - w[..., None]) * b
        for w, a, b in zip(weights, laplacian(inside.astype(np.float64)), laplacian(outside.astype(np.float64)))
    ]
    out = blended[-1]
    for band in reversed(blended[:-1]):
        out = cv2.pyrUp(out, dstsize=band.shape[1::-1]) + band
    return out


def fit_donor(
    donor: np.ndarray,
    donor_mask: np.ndarray,
    donor_landmarks: np.ndarray,
    target_landmarks: np.ndarray,
    config: DonorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: the donor's crop and face mask (uint8) fitted onto the target's outline, resampled once."""
    from augmentor.donors.compose import fit_similarity

    matrix = fit_similarity(donor_landmarks[OUTLINE], target_landmarks[OUTLINE], config)
    moved = np.asarray(donor_landmarks, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return warp_outline(
        donor,
        donor_mask.astype(np.uint8),
        matrix,
        moved[OUTLINE],
        target_landmarks[OUTLINE],
        config.max_warp if config.warp_outline else None,
    )


def fill_and_blend(
    target: np.ndarray,
    target_mask: np.ndarray,
    donor_mask: np.ndarray,
    recoloured: np.ndarray,
    config: DonorConfig,
    fine_sigma: float = 0.0,
) -> np.ndarray:
    """Steps 3 and 4: fill what shows of the donor's fitted face (``donor_mask``) outside the target's, blend the
    target's face into the ``recoloured`` donor across the seam, and copy the face back bit-exact (uint8 out)."""
    import cv2

    from augmentor.donors.compose import poisson_fill

    face = target_mask > 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * config.refined_band_dilation + 1,) * 2)
    band = (cv2.dilate(donor_mask, kernel) > 0) & ~face  # what is left of the donor's face outside the target's
    fixed = np.where(face[..., None], target.astype(np.float64), recoloured)
    context = poisson_fill(fixed, recoloured, band, band | face)
    donor_face = np.where(face[..., None], recoloured, context)  # the donor's own (recoloured) face under the target's
    blended = multiband_blend(context, donor_face, face.astype(np.float64), config.blend_levels, fine_sigma)
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[face] = target[face]
    return out


def compose_refined(
    target: np.ndarray,
    target_mask: np.ndarray,
    target_landmarks: np.ndarray,
    donor: np.ndarray,
    donor_mask: np.ndarray,
    donor_landmarks: np.ndarray,
    donor_valid: np.ndarray | None = None,
    config: DonorConfig | None = None,
) -> np.ndarray:
    """The target's face in the donor's context, seamless: ``[S, S, 3]`` uint8, equal to ``target`` on its mask.

    Same arguments as :func:`augmentor.donors.compose.compose`.
    """
    from augmentor.donors.compose import recolour

    config = config or DonorConfig()
    donor, donor_mask = fit_donor(donor, donor_mask, donor_landmarks, target_landmarks, config)
    recoloured, _ = recolour(target, target_mask, donor, donor_mask, config)
    return fill_and_blend(target, target_mask, donor_mask, recoloured, config)

"""ProGAN's multi-scale sliced Wasserstein distance (Karras et al. 2018, section 5), in torch.

Follows the reference ``metrics/sliced_wasserstein.py`` of tkarras/progressive_growing_of_gans:
a Laplacian pyramid (cv2.pyrDown/pyrUp's 5-tap binomial filter, reflect-101 borders) from the full resolution
down to 16 px; 128 random 7x7x3 neighbourhoods per image and level; each set's descriptors normalised per
channel by that set's own mean and std (``per-set``, the reference's choice); ``num_projections`` random unit directions drawn in ``repeats`` batches
(the reference: 4 x 128 = 512); the sorted projections compared point by point. Reported x 1e3, like the
reference's ``SWDx1e3_<res>``. Fine levels hold the high-frequency band, so blur shows up there.

The per-set normalisation rescales away how much detail a set has, so it forgives blur. :func:`level_stats` and
:func:`normalise` with ``stats`` give the other choice: every set normalised by the *real* reference set's
statistics (``real-referenced``), under which a blurred set's small band-pass values stay small. Seam SWD draws
the neighbourhoods only near the face-mask edge (:func:`edge_candidates`), where a composite's joins are.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MIN_RESOLUTION = 16  # coarsest pyramid level (the reference stops at 16 px)
NHOOD_SIZE = 7  # neighbourhood side of a descriptor
NHOODS_PER_IMAGE = 128  # descriptors drawn per image and level

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # separable cv2.pyrDown kernel


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """5x5 binomial filter of ``[B, C, H, W]`` with reflect-101 borders (scipy 'mirror', cv2's default)."""
    h, w = x.shape[-2:]
    taps = (_BINOMIAL * gain**0.5).tolist()
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = sum(t * x[..., :, i : i + w] for i, t in enumerate(taps))  # shifted sums: faster than a grouped conv
    return sum(t * x[..., i : i + h, :] for i, t in enumerate(taps))


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: blur, keep the even rows and columns."""
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrUp: zero-insert to twice the size, blur with 4x the kernel."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Band-pass levels of ``[B, C, H, W]`` float images, finest first; the last level is the low-pass residual."""
    pyramid = [images]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def _centres(
    shape: tuple[int, ...], nhoods_per_image: int, rng: np.random.Generator, candidates: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbourhood centres ``[B, n]`` (rows, cols): uniform over the image, or drawn from ``candidates``
    (``[B, H, W]`` bool; an image with no candidate falls back to uniform)."""
    b, _, h, w = shape
    half = NHOOD_SIZE // 2
    ys = rng.integers(half, h - half, size=(b, nhoods_per_image))
    xs = rng.integers(half, w - half, size=(b, nhoods_per_image))
    if candidates is not None:
        for i in range(b):
            cy, cx = np.nonzero(candidates[i])
            if len(cy):
                pick = rng.integers(0, len(cy), size=nhoods_per_image)
                ys[i], xs[i] = cy[pick], cx[pick]
    return torch.from_numpy(ys), torch.from_numpy(xs)


def sample_descriptors(
    level: torch.Tensor, nhoods_per_image: int, rng: np.random.Generator, candidates: np.ndarray | None = None
) -> torch.Tensor:
    """``nhoods_per_image`` random 7x7 neighbourhoods of every image: ``[B * nhoods, C, 7, 7]``.

    ``candidates``: ``[B, H, W]`` bool, the allowed centres of each image (None: anywhere a 7x7 window fits).
    """
    b, c, _, w = level.shape
    ys, xs = _centres(level.shape, nhoods_per_image, rng, candidates)
    half = NHOOD_SIZE // 2
    offsets = torch.arange(-half, half + 1)
    rows = (ys[..., None] + offsets).view(b, nhoods_per_image, NHOOD_SIZE, 1)  # [B, n, 7, 1]
    cols = (xs[..., None] + offsets).view(b, nhoods_per_image, 1, NHOOD_SIZE)  # [B, n, 1, 7]
    flat = (rows * w + cols).view(b, 1, -1).expand(b, c, -1)  # [B, C, n*49]
    patches = level.flatten(2).gather(2, flat)  # [B, C, n*49]
    patches = patches.view(b, c, nhoods_per_image, NHOOD_SIZE, NHOOD_SIZE).transpose(1, 2)
    return patches.reshape(b * nhoods_per_image, c, NHOOD_SIZE, NHOOD_SIZE)


def channel_stats(descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std ``[1, C, 1, 1]`` of ``[M, C, 7, 7]`` descriptors."""
    mean = descriptors.mean(dim=(0, 2, 3), keepdim=True)
    std = descriptors.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-8)
    return mean, std


def normalise(descriptors: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Zero mean, unit std per channel, flattened to ``[M, C*49]``.

    Args:
        descriptors: ``[M, C, 7, 7]``.
        stats: ``(mean, std)`` of another set (:func:`channel_stats`), e.g. the real reference set's; None uses the
            set's own (ProGAN's per-set normalisation).
    """
    mean, std = channel_stats(descriptors) if stats is None else stats
    return ((descriptors - mean) / std).flatten(1)


def level_stats(raw: dict[int, torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per-level channel statistics of :func:`raw_levels` descriptors (the reference set's, for
    real-referenced SWD)."""
    return {res: channel_stats(d) for res, d in raw.items()}


def normalise_levels(
    raw: dict[int, torch.Tensor], stats: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
) -> dict[int, torch.Tensor]:
    """Every level of :func:`raw_levels` normalised per set (``stats`` None) or by ``stats``' levels."""
    return {res: normalise(d, None if stats is None else stats[res]) for res, d in raw.items()}


def edge_candidates(masks: np.ndarray, size: int, edge_px: int) -> np.ndarray:
    """``[N, size, size]`` bool: pixels within ``edge_px`` of the face-mask edge at ``size`` px (inside or out),
    where a 7x7 neighbourhood fits.

    Args:
        masks: ``[N, S, S]`` face masks (nonzero = face), resized to ``size`` by area averaging.
        size: The pyramid level's side.
        edge_px: Distance from the edge, in px of that level.
    """
    import cv2

    half = NHOOD_SIZE // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge_px + 1,) * 2)
    out = np.zeros((len(masks), size, size), bool)
    for i, mask in enumerate(masks):
        small = cv2.resize((mask > 0).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5
        small = small.astype(np.uint8)
        out[i] = cv2.dilate(small, kernel) != cv2.erode(small, kernel)
    out[:, :half], out[:, -half:], out[:, :, :half], out[:, :, -half:] = False, False, False, False
    return out


def _quantiles(sorted_proj: np.ndarray, count: int) -> np.ndarray:
    """``count`` evenly spaced columns of sorted ``[P, M]`` projections (the identity when ``M == count``)."""
    if sorted_proj.shape[1] == count:
        return sorted_proj
    return sorted_proj[:, np.linspace(0, sorted_proj.shape[1] - 1, count).round().astype(np.int64)]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_projections: int, repeats: int, seed: int) -> float:
    """Mean over ``num_projections`` random unit directions of the 1-D Wasserstein-1 distance of ``[M, D]`` sets.

    Directions are drawn in ``repeats`` batches of ``num_projections // repeats``, as the reference does. Sets of
    different sizes are compared at the smaller set's quantiles.
    """
    gen = torch.Generator().manual_seed(seed)
    per_repeat = max(1, num_projections // repeats)
    count = min(len(a), len(b))
    results = []
    for _ in range(repeats):
        dirs = torch.randn(per_repeat, a.shape[1], generator=gen).to(a.dtype)  # [P, D]
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        proj_a = np.sort((dirs @ a.T).numpy(), axis=1)  # [P, M]; numpy sorts rows several times faster than torch
        proj_b = np.sort((dirs @ b.T).numpy(), axis=1)
        results.append(float(np.abs(_quantiles(proj_a, count) - _quantiles(proj_b, count)).mean()))
    return float(np.mean(results))


def _levels(images: np.ndarray, min_resolution: int) -> list[int]:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
    size = images.shape[1]
    if images.shape[2] != size or size < min_resolution or size & (size - 1):
        raise ValueError(f"expected square power-of-two images of at least {min_resolution} px, got {images.shape}")
    resolutions = []
    while size >= min_resolution:
        resolutions.append(size)
        size //= 2
    return resolutions


def level_descriptors(
    images: np.ndarray,
    resolutions: list[int],
    nhoods_per_image: int,
    rng: np.random.Generator,
    batch_size: int,
    candidates: dict[int, np.ndarray] | None = None,
    num_kept: int | None = None,
) -> list[torch.Tensor]:
    """Raw descriptors ``[N * nhoods, 3, 7, 7]`` of the pyramid levels ``resolutions``, finest first.

    ``candidates``: ``{res: [N, res, res] bool}`` allowed centres per level (None: anywhere). ``num_kept``: sample
    only the finest levels (the pyramid still goes down to the last resolution, so each kept level is the same
    band-pass as in the full pyramid).
    """
    kept = len(resolutions) if num_kept is None else num_kept
    per_level: list[list[torch.Tensor]] = [[] for _ in resolutions[:kept]]
    for i in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2).float()
        for k, level in enumerate(laplacian_pyramid(batch, len(resolutions))[:kept]):
            allowed = None if candidates is None else candidates[resolutions[k]][i : i + batch_size]
            per_level[k].append(sample_descriptors(level, nhoods_per_image, rng, allowed))
    return [torch.cat(d) for d in per_level]


def raw_levels(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    min_resolution: int = MIN_RESOLUTION,
    batch_size: int = 256,
    masks: np.ndarray | None = None,
    edge_px: int = 3,
    num_levels: int | None = None,
) -> dict[int, torch.Tensor]:
    """Unnormalised descriptors of one image set: ``{res: [N * nhoods, 3, 7, 7]}``, finest first.

    Args:
        images: uint8 ``[N, H, W, 3]``.
        rng: Draws the neighbourhood positions.
        masks: ``[N, H, W]`` face masks: then the neighbourhoods are centred within ``edge_px`` px (of each level)
            of the mask edge (seam SWD). None: anywhere.
        num_levels: Keep only the finest levels (None: down to ``min_resolution``).
    """
    resolutions = _levels(images, min_resolution)
    kept = resolutions[:num_levels]
    candidates = None if masks is None else {r: edge_candidates(masks, r, edge_px) for r in kept}
    with torch.inference_mode():
        found = level_descriptors(images, resolutions, nhoods_per_image, rng, batch_size, candidates, len(kept))
    return dict(zip(kept, found))


def describe_levels(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    min_resolution: int = MIN_RESOLUTION,
    batch_size: int = 256,
) -> dict[int, torch.Tensor]:
    """Per-set normalised descriptors of one image set: ``{res: [N * nhoods, 147]}``, finest first, rows grouped
    by image."""
    raw = raw_levels(images, rng, nhoods_per_image=nhoods_per_image, min_resolution=min_resolution, batch_size=batch_size)
    return normalise_levels(raw)


def swd_between(
    real: dict[int, torch.Tensor],
    fake: dict[int, torch.Tensor],
    *,
    num_projections: int = 512,
    repeats: int = 4,
    seed: int = 0,
) -> dict[int, float]:
    """SWD x 1e3 per level between two sets of :func:`describe_levels` descriptors."""
    if list(real) != list(fake):
        raise ValueError(f"image sizes differ: levels {list(real)} vs {list(fake)}")
    return {
        res: 1e3 * sliced_wasserstein(real[res], fake[res], num_projections, repeats, seed + k)
        for k, res in enumerate(real)
    }


def multiscale_swd(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    num_projections: int = 512,
    repeats: int = 4,
    seed: int = 0,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    min_resolution: int = MIN_RESOLUTION,
    batch_size: int = 256,
) -> dict[int, float]:
    """Sliced Wasserstein distance x 1e3 between two image sets at each Laplacian-pyramid level.

    Args:
        real: uint8 ``[N, H, W, 3]``, H = W a power of two (128 for the cascade).
        fake: uint8 ``[M, H, W, 3]``, same size as ``real``.
        num_projections: Random directions in all (the reference: 512).
        repeats: Batches the directions are drawn in (the reference: 4 x 128).
        seed: Seeds the neighbourhood positions and the directions; the same seed gives the same value.
        nhoods_per_image: 7x7 neighbourhoods drawn per image and level.
        min_resolution: Coarsest level.
        batch_size: Images per pyramid pass (memory only).

    Returns:
        ``{resolution: SWD x 1e3}``, finest first, e.g. ``{128: ..., 64: ..., 32: ..., 16: ...}``.

    Raises:
        ValueError: not uint8 ``[N, H, W, 3]`` square power-of-two images, or the two sets differ in size.
    """
    real_rng, fake_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    options = {"nhoods_per_image": nhoods_per_image, "min_resolution": min_resolution, "batch_size": batch_size}
    return swd_between(
        describe_levels(real, real_rng, **options),
        describe_levels(fake, fake_rng, **options),
        num_projections=num_projections,
        repeats=repeats,
        seed=seed,
    )


def project_levels(
    descriptors: dict[int, torch.Tensor], num_images: int, *, num_projections: int = 64, seed: int = 0
) -> dict[int, np.ndarray]:
    """Per-image projections of :func:`describe_levels` descriptors for bootstrapping over images:
    ``{res: [P, N, nhoods]}`` float32. The directions depend on ``seed`` and the level only, so sets projected with
    the same seed are comparable (:func:`swd_resampled`)."""
    out = {}
    for k, (res, desc) in enumerate(descriptors.items()):
        gen = torch.Generator().manual_seed(seed + k)
        dirs = torch.randn(num_projections, desc.shape[1], generator=gen)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        out[res] = (dirs @ desc.T).numpy().reshape(num_projections, num_images, -1)
    return out


def sorted_resample(projections: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sorted ``[P, N * nhoods]`` projections of a bootstrap resample (image ``i`` repeated ``counts[i]`` times)."""
    resampled = np.repeat(projections, counts.astype(np.int64), axis=1)
    return np.sort(resampled.reshape(len(projections), -1), axis=1)


def swd_sorted(sa: np.ndarray, sb: np.ndarray) -> float:
    """SWD x 1e3 between two sorted ``[P, M]`` projection sets (compared at the smaller one's quantiles)."""
    count = min(sa.shape[1], sb.shape[1])
    return 1e3 * float(np.abs(_quantiles(sa, count) - _quantiles(sb, count)).mean())


def swd_resampled(a: np.ndarray, b: np.ndarray, count_a: np.ndarray, count_b: np.ndarray) -> float:
    """SWD x 1e3 between two ``[P, N, nhoods]`` projection sets whose images appear ``count_*`` times."""
    return swd_sorted(sorted_resample(a, count_a), sorted_resample(b, count_b))

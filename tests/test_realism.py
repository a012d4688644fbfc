"""The realism judge: the classifier two-sample test, the edge windows, real-referenced and seam SWD, diversity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augmentor.evaluation.bands import WINDOW, crop_region, window_origin
from augmentor.evaluation.c2st import C2STConfig, c2st, identity_split, jpeg_roundtrip, t_interval
from augmentor.evaluation.diversity import pairwise_context_difference, pairwise_descriptor_distance
from augmentor.evaluation.swd import (
    NHOOD_SIZE,
    channel_stats,
    edge_candidates,
    level_stats,
    normalise,
    raw_levels,
    swd_between,
)

FAST = C2STConfig(seeds=(0, 1), epochs=4, widths=(8, 16, 16, 16), batch_size=32)


def textures(n: int, seed: int, size: int = 32) -> np.ndarray:
    """``n`` random textured uint8 images: smooth colour ramps plus white noise of random strength."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[None, :, None]
    base = 60 + 120 * ramp * rng.uniform(0.2, 1.0, (n, 1, 1, 3)) + rng.uniform(0, 60, (n, 1, 1, 3))
    noise = rng.normal(0, 1, (n, size, size, 3)) * rng.uniform(15, 35, (n, 1, 1, 1))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def blurred(images: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    import cv2

    return np.stack([cv2.GaussianBlur(x, (0, 0), sigma) for x in images])


def test_c2st_is_chance_on_two_halves_of_one_set_and_near_one_for_blur():
    images = textures(320, seed=3)
    ids = np.arange(320) % 80  # 80 "identities", split as a whole between train and test
    same = c2st(images[:160], images[160:], ids[:160], ids[160:] + 1000, FAST)
    assert abs(same.mean - 0.5) < 0.1, same.accuracies
    blur = c2st(images[:160], blurred(images[160:]), ids[:160], ids[160:] + 1000, FAST)
    assert blur.mean > 0.9, blur.accuracies
    assert len(blur.accuracies) == 2 and blur.num_test[0] > 0


def test_identity_split_never_puts_one_identity_on_both_sides():
    ids = np.repeat(np.arange(30), 4).astype(str)
    train = identity_split(ids, 0.7, np.random.default_rng(0))
    for name in np.unique(ids):
        assert len(set(train[ids == name])) == 1
    assert 0.6 < train.mean() < 0.8
    with pytest.raises(ValueError, match="two identities"):
        identity_split(np.array(["a", "a"]), 0.7, np.random.default_rng(0))


def test_jpeg_roundtrip_changes_pixels_by_quality():
    images = textures(4, seed=1)
    high, low = jpeg_roundtrip(images, np.full(4, 95)), jpeg_roundtrip(images, np.full(4, 30))
    error = lambda x: np.abs(x.astype(int) - images).mean()
    assert 0 < error(high) < error(low)


def test_t_interval_matches_scipy():
    from scipy import stats

    values = np.array([0.61, 0.66, 0.58, 0.70])
    low, high = t_interval(values)
    expected = stats.t.interval(0.95, 3, loc=values.mean(), scale=stats.sem(values))
    np.testing.assert_allclose([low, high], expected)
    assert np.isnan(t_interval(np.array([0.5]))[0])


def fixture_mask() -> np.ndarray:
    """A face-shaped mask on a 128 px crop: an ellipse, rows 46-105, cols 33-94."""
    import cv2

    mask = np.zeros((128, 128), np.uint8)
    cv2.ellipse(mask, (64, 76), (31, 30), 0, 0, 360, 1, -1)
    return mask


def test_edge_windows_follow_the_mask():
    mask = fixture_mask()
    rows = np.nonzero(mask.any(1))[0]
    assert (rows.min(), rows.max()) == (46, 106)
    assert window_origin(mask, "jaw") == (106 - 24, 64 - 40)  # chin row - 24, centred on the lower third
    assert window_origin(mask, "forehead") == (46 - 24, 64 - 40)
    shifted = np.roll(mask, (5, -7), axis=(0, 1))
    assert window_origin(shifted, "jaw") == (87, 17)
    low = np.roll(mask, 20, axis=0)  # chin at row 126: the window is kept inside the crop
    assert window_origin(low, "jaw")[0] == 128 - WINDOW[0]
    images = np.arange(2 * 128 * 128 * 3, dtype=np.int64).reshape(2, 128, 128, 3).astype(np.uint8)
    crops = crop_region(images, np.stack([mask, shifted]), "jaw")
    assert crops.shape == (2, *WINDOW, 3)
    np.testing.assert_array_equal(crops[1], images[1, 87 : 87 + 40, 17 : 17 + 80])
    assert crop_region(images, np.stack([mask, mask]), "whole") is images
    with pytest.raises(ValueError, match="empty"):
        window_origin(np.zeros((128, 128)), "jaw")


def test_real_referenced_normalisation_matches_numpy():
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(2.0, 3.0, (50, 3, 7, 7)).astype(np.float32))
    fake = torch.from_numpy(rng.normal(0.5, 0.5, (40, 3, 7, 7)).astype(np.float32))
    got = normalise(fake, channel_stats(real)).numpy()
    r = real.numpy()
    mean, std = r.mean(axis=(0, 2, 3), keepdims=True), r.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(got, ((fake.numpy() - mean) / std).reshape(40, -1), rtol=1e-5, atol=1e-5)
    own = normalise(fake).numpy()  # per-set: its own statistics
    assert abs(own.std() - 1) < 1e-3 and got.std() < 0.3  # a low-contrast set stays small only when real-referenced


def test_real_referenced_swd_sees_blur_that_per_set_swd_forgives():
    sharp, other = textures(60, seed=4, size=64), textures(60, seed=5, size=64)
    soft = blurred(other, 2.0)
    rng = lambda: np.random.default_rng(1)
    real = raw_levels(sharp, rng())
    stats = level_stats(real)
    ref = {r: normalise(d, stats[r]) for r, d in real.items()}
    own = {r: normalise(d) for r, d in real.items()}

    def both(images):
        raw = raw_levels(images, rng())
        referenced = swd_between(ref, {r: normalise(d, stats[r]) for r, d in raw.items()})
        per_set = swd_between(own, {r: normalise(d) for r, d in raw.items()})
        return referenced[64], per_set[64]

    (ref_same, set_same), (ref_blur, set_blur) = both(other), both(soft)
    assert ref_blur / ref_same > set_blur / set_same > 1  # blur counts more under the real reference
    assert ref_blur > 5 * ref_same


def test_edge_candidates_lie_near_the_mask_edge():
    mask = fixture_mask()[None]
    near = edge_candidates(mask, 128, 3)[0]
    import cv2

    edge_distance = np.minimum(
        cv2.distanceTransform((mask[0] == 0).astype(np.uint8), cv2.DIST_L2, 5),
        cv2.distanceTransform(mask[0], cv2.DIST_L2, 5),
    )
    assert near.any() and edge_distance[near].max() <= 4.5
    half = NHOOD_SIZE // 2
    assert not near[:half].any() and not near[:, -half:].any()
    assert edge_candidates(mask, 64, 2)[0].sum() < near.sum()
    images = textures(3, seed=2, size=128)
    seam = raw_levels(images, np.random.default_rng(0), masks=np.repeat(mask, 3, 0), num_levels=2)
    assert list(seam) == [128, 64] and seam[128].shape == (3 * 128, 3, 7, 7)


def test_diversity_of_copies():
    mask = fixture_mask()[None].repeat(2, 0)
    base = textures(2, seed=0, size=128)
    same = np.stack([base, base])
    assert np.allclose(pairwise_context_difference(same, mask), 0)
    shifted = np.stack([base, np.clip(base.astype(int) + 6, 0, 255).astype(np.uint8)])
    shifted[1][mask > 0] = base[mask > 0]  # the face is the same in every copy
    difference = pairwise_context_difference(shifted, mask)
    assert np.all((difference > 5.5) & (difference <= 6))
    describe = lambda x: x.reshape(len(x), -1)[:, :10].astype(float)
    assert np.allclose(pairwise_descriptor_distance(same, mask, describe), 0)
    with pytest.raises(ValueError, match="K >= 2"):
        pairwise_context_difference(same[:1], mask)

"""Metrics pinned to their reference implementations: SSIM to scikit-image, FID/KID to torchmetrics; the paired
bootstrap on known cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from augmentor.evaluation.baselines import mean_colour, navier_stokes
from augmentor.evaluation.metrics import (
    SSIM_RADIUS,
    frechet_distance,
    kernel_distance,
    kid_from_kernels,
    polynomial_kernel,
    ssim,
    ssim_scores,
)
from augmentor.evaluation.stats import (
    Difference,
    bootstrap_counts,
    fid_differences,
    paired_mean_difference,
    weighted_moments,
)


@pytest.fixture(scope="module")
def faces(lfw_images, masker):
    found = [masker(p) for p in lfw_images]
    return np.stack([f.aligned for f in found]), np.stack([f.mask for f in found])


def _skimage(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    value, full = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
        full=True,
    )
    r = SSIM_RADIUS
    valid = full.mean(-1)[r:-r, r:-r]
    return value, valid[mask[r:-r, r:-r] == 0].mean()


@pytest.mark.parametrize("fill", [navier_stokes, mean_colour, "shift"])
def test_ssim_matches_scikit_image_whole_and_background(faces, fill):
    images, masks = faces
    if fill == "shift":
        filled = np.roll(images, 3, axis=2)
    else:
        filled = np.stack([fill(im * m[..., None], m) for im, m in zip(images, masks)])
    whole, background = ssim_scores(filled, images, masks)
    expected = np.array([_skimage(f, im, m) for f, im, m in zip(filled, images, masks)])
    np.testing.assert_allclose(whole, expected[:, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(background, expected[:, 1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ssim(filled, images), whole)
    if fill != "shift":  # the face is pasted back: the background alone scores lower than the whole image
        assert np.all(background < whole)


def test_ssim_of_identical_images_is_one_and_background_nan_without_mask(faces):
    images, masks = faces
    whole, background = ssim_scores(images, images, masks)
    np.testing.assert_allclose(whole, 1.0, atol=1e-12)
    np.testing.assert_allclose(background, 1.0, atol=1e-12)
    assert np.isnan(ssim_scores(images[:2], images[:2])[1]).all()


@pytest.fixture(scope="module")
def feature_sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 16))
    fake = rng.normal(0.3, 1.2, size=(250, 16))
    return real, fake


class _Features(torch.nn.Identity):
    num_features = 16


def test_frechet_and_kernel_distances_match_torchmetrics(feature_sets):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = feature_sets
    fid = FrechetInceptionDistance(feature=_Features())
    fid.update(torch.from_numpy(real), real=True)
    fid.update(torch.from_numpy(fake), real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(fid.compute()), rel=1e-6)
    # torchmetrics' KID on one subset as large as both sets is its unbiased MMD estimate on the whole sets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Features(), subsets=1, subset_size=250)
    kid.update(torch.from_numpy(real[:250]), real=True)
    kid.update(torch.from_numpy(fake), real=False)
    assert kernel_distance(real[:250], fake) == pytest.approx(float(kid.compute()[0]), rel=1e-6)
    assert kernel_distance(real[:250], fake) == pytest.approx(_kid_torchmetrics(real[:250], fake), rel=1e-6)
    assert abs(kernel_distance(real[:150], real[150:])) < 0.02 * kernel_distance(real, fake)


def _kid_torchmetrics(real: np.ndarray, fake: np.ndarray) -> float:
    from torchmetrics.image.kid import poly_mmd

    return float(poly_mmd(torch.from_numpy(real), torch.from_numpy(fake), degree=3, gamma=None, coef=1.0))


def test_bootstrap_weights_equal_repeated_rows(feature_sets):
    real, fake = feature_sets
    counts = bootstrap_counts(len(fake), 3, seed=0)
    assert counts.shape == (3, len(fake)) and np.all(counts.sum(1) == len(fake))
    repeated = np.repeat(fake, counts[0].astype(int), axis=0)
    mu, cov = weighted_moments(fake, counts[0])
    np.testing.assert_allclose(mu, repeated.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(repeated, rowvar=False), atol=1e-12)
    ones, ref_ones = np.ones((1, len(fake))), np.ones((1, len(real)))
    got = fid_differences(real, fake, fake[::-1] * 0.5, ones, ref_ones)[0]
    assert got == pytest.approx(frechet_distance(real, fake) - frechet_distance(real, fake[::-1] * 0.5))
    k = (polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake))
    assert kid_from_kernels(*k) == pytest.approx(kernel_distance(real, fake))


def test_paired_bootstrap_known_difference():
    rng = np.random.default_rng(1)
    hard = rng.uniform(0, 1, 2000)  # per-image difficulty, shared by both methods: the pairing cancels it
    model, baseline = hard + 0.01 + rng.normal(0, 0.005, 2000), hard + rng.normal(0, 0.005, 2000)
    value, low, high, wins = paired_mean_difference(model, baseline, bootstrap_counts(2000, 500, 0), True)
    assert value == pytest.approx(0.01, abs=1e-3)
    assert low < 0.01 < high and high - low < 0.002
    assert 0.85 < wins < 0.99
    assert Difference("ssim", "m", "b", True, value, low, high, wins).verdict == "model better"
    assert Difference("fid_face", "m", "b", False, value, low, high).verdict == "baseline better"
    assert Difference("ssim", "m", "b", True, 0.001, -0.001, 0.003).verdict == "not established"
    nan_model = model.copy()
    nan_model[:10] = np.nan
    assert np.isfinite(paired_mean_difference(nan_model, baseline, bootstrap_counts(2000, 50, 0), True)).all()

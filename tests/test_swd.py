"""ProGAN's multi-scale sliced Wasserstein distance: pyramid pinned to cv2, distance pinned to scipy, blur seen
at the fine levels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import wasserstein_distance

from augmentor.evaluation.swd import laplacian_pyramid, multiscale_swd, pyr_down, pyr_up, sliced_wasserstein


@pytest.fixture(scope="module")
def faces(lfw_images) -> np.ndarray:
    """The 10 LFW fixtures, centre 160 px resized to 128: uint8 ``[10, 128, 128, 3]``."""
    crops = [
        Image.open(p).convert("RGB").crop((45, 45, 205, 205)).resize((128, 128), Image.BICUBIC) for p in lfw_images
    ]
    return np.stack([np.asarray(c) for c in crops])


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


def test_pyramid_steps_match_cv2(faces):
    image = faces[0].astype(np.float32)
    down = _hwc(pyr_down(_chw(image)))
    np.testing.assert_allclose(down, cv2.pyrDown(image), atol=1e-3)
    np.testing.assert_allclose(_hwc(pyr_up(_chw(down))), cv2.pyrUp(down), atol=1e-3)


def test_laplacian_pyramid_reconstructs_the_image(faces):
    levels = laplacian_pyramid(_chw(faces[1]), 4)
    assert [lv.shape[-1] for lv in levels] == [128, 64, 32, 16]
    image = levels[-1]
    for band in reversed(levels[:-1]):
        image = pyr_up(image) + band
    np.testing.assert_allclose(_hwc(image), faces[1].astype(np.float32), atol=1e-3)


def test_sliced_distance_is_the_1d_wasserstein_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 4000), rng.exponential(1.0, 4000)
    # one dimension: every unit direction is +-1, and W1 is unchanged by the sign
    got = sliced_wasserstein(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None], 8, 2, seed=0)
    assert got == pytest.approx(wasserstein_distance(a, b), rel=1e-6)
    same = torch.from_numpy(rng.normal(size=(500, 147)).astype(np.float32))
    assert sliced_wasserstein(same, same, 64, 2, seed=0) == 0.0


def test_identical_sets_score_about_zero(faces):
    """Identical sets differ only by which neighbourhoods were drawn: the floor shrinks as more are drawn."""
    few = multiscale_swd(faces, faces, nhoods_per_image=64)
    many = multiscale_swd(faces, faces, nhoods_per_image=1024)
    assert list(many) == [128, 64, 32, 16]
    for res in many:
        assert many[res] < 0.35 * few[res], res  # 16x the descriptors: 1/4 of the noise (it falls as 1/sqrt)


def test_blur_is_worse_at_fine_levels_than_at_coarse_ones(faces):
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in faces])
    floor = multiscale_swd(faces, faces, nhoods_per_image=512)
    blur = multiscale_swd(faces, blurred, nhoods_per_image=512)
    excess = {res: blur[res] - floor[res] for res in blur}
    assert excess[128] > 2 * excess[64] > 0
    assert excess[64] > excess[32]
    assert excess[128] > 10 * max(excess[16], 1.0)
    assert blur[128] > 3 * floor[128]


def test_seeded_and_validated(faces):
    a = multiscale_swd(faces[:5], faces[5:], seed=3, nhoods_per_image=32)
    b = multiscale_swd(faces[:5], faces[5:], seed=3, nhoods_per_image=32)
    c = multiscale_swd(faces[:5], faces[5:], seed=4, nhoods_per_image=32)
    assert a == b and a != c
    assert set(multiscale_swd(faces[:4], faces[4:], nhoods_per_image=16)) == {128, 64, 32, 16}  # 4 vs 6 images
    with pytest.raises(ValueError, match="uint8"):
        multiscale_swd(faces.astype(np.float32), faces)
    with pytest.raises(ValueError, match="sizes differ"):
        multiscale_swd(faces, faces[:, :64, :64])

"""The inference API on numpy and torch inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augmentor.hallucinator import Hallucinator
from augmentor.models import RESOLUTIONS


@pytest.fixture(scope="module")
def faces(lfw_images):
    from augmentor.faces import FaceMasker

    masker = FaceMasker()
    found = [masker(p) for p in lfw_images[:3]]
    return np.stack([f.masked for f in found]), np.stack([f.mask for f in found]), np.stack([f.aligned for f in found])


def test_numpy_batch_keeps_face_pixels(tiny_checkpoints, faces):
    hal = Hallucinator.from_pretrained(tiny_checkpoints / "plain", device="cpu", batch_size=2)
    masked, mask, aligned = faces
    out = hal(masked, mask)
    assert out.shape == masked.shape and out.dtype == np.uint8
    inside = mask.astype(bool)
    assert np.array_equal(out[inside], aligned[inside])  # bit-identical face pixels
    assert (out[~inside] != 0).mean() > 0.5  # the background was painted
    single = hal(masked[1], mask[1] * 255)
    assert np.array_equal(single, out[1])


def test_all_levels_and_torch_api(tiny_checkpoints, faces):
    hal = Hallucinator.from_pretrained(tiny_checkpoints / "plain", device="cpu")
    masked, mask, _ = faces
    levels = hal(masked, mask, all_levels=True)
    assert {r: v.shape for r, v in levels.items()} == {r: (3, r, r, 3) for r in RESOLUTIONS}
    x = torch.from_numpy(masked).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = torch.from_numpy(mask)[:, None].float()
    y = hal(x, m)
    assert y.shape == (3, 3, 128, 128) and y.dtype == torch.float32
    assert torch.equal(y[m.expand_as(y).bool()], x[m.expand_as(x).bool()])
    with pytest.raises(ValueError, match="expected masked"):
        hal(x[:, :, :64, :64], m)
    with pytest.raises(ValueError, match="expected uint8"):
        hal(masked.astype(np.float32), mask)


def test_noise_seeds_give_diverse_but_repeatable_outputs(tiny_checkpoints, faces):
    hal = Hallucinator.from_pretrained(tiny_checkpoints / "noisy", device="cpu")
    masked, mask, _ = faces
    a, b, c = hal(masked, mask, seed=1), hal(masked, mask, seed=1), hal(masked, mask, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    inside = mask.astype(bool)
    assert np.array_equal(a[inside], c[inside])


def test_missing_checkpoint_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        Hallucinator.from_pretrained(tmp_path)
    import augmentor.hallucinator as module

    monkeypatch.setattr(module, "DEFAULT_WEIGHTS", tmp_path / "weights" / "cascade128")
    with pytest.raises(FileNotFoundError, match="shipped default model is missing"):
        Hallucinator.from_pretrained()


def test_per_image_seeds_do_not_depend_on_the_batch(tiny_checkpoints, faces):
    hal = Hallucinator.from_pretrained(tiny_checkpoints / "noisy", device="cpu", batch_size=2)
    masked, mask, _ = faces
    together = hal(masked, mask, seeds=[11, 12, 13])  # split into batches of 2 and 1
    alone = hal(masked[1:2], mask[1:2], seeds=[12])
    reordered = hal(masked[::-1], mask[::-1], seeds=[13, 12, 11])
    assert np.abs(together[1].astype(int) - alone[0]).max() <= 1  # same noise; float reduction order may differ
    assert np.abs(together.astype(int) - reordered[::-1]).max() <= 1
    torch.testing.assert_close(hal.noise([12])[64][0], hal.noise([11, 12])[64][1], rtol=0, atol=0)
    assert not np.array_equal(together, hal(masked, mask, seeds=[21, 22, 23]))
    with pytest.raises(ValueError, match="one seed per image"):
        hal(masked, mask, seed=1, seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="one seed per image"):
        hal(masked, mask, seeds=[1, 2])
    plain = Hallucinator.from_pretrained(tiny_checkpoints / "plain", device="cpu")
    assert plain.noise_channels == 0
    assert np.array_equal(plain(masked, mask, seeds=[1, 2, 3]), plain(masked, mask))

"""Generator blocks, the cascade, paste-back and discriminators, at tiny widths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from augmentor.models import (
    PAPER_WIDTHS,
    RESOLUTIONS,
    Cascade,
    CascadeConfig,
    Discriminator,
    Discriminators,
    GeneratorBlock,
    image_pyramid,
    input_pyramid,
    paste_face,
)


def _batch(batch: int = 2, size: int = 128, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 1
    return image, mask


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_block_shapes_and_layer_counts(resolution, tiny_widths):
    block = GeneratorBlock(resolution, in_channels=6, widths=tiny_widths)
    x = torch.randn(2, 6, resolution, resolution)
    y = block(x)
    assert y.shape == (2, 3, resolution, resolution)
    assert torch.isfinite(y).all() and y.abs().max() <= 1
    expected = int(math.log2(resolution // 4))  # block_128: 5, block_8: 1; one fewer per halving
    assert block.num_residual_blocks == expected
    assert block.num_pixel_shuffle_blocks == expected
    assert block.stem[0].dilation == (2, 2)  # the encoder opens with an atrous convolution


def test_widths_come_from_the_config():
    block = GeneratorBlock(32, 3, PAPER_WIDTHS)
    assert block.stem[0].out_channels == PAPER_WIDTHS[32]
    assert block.down[-1][0].out_channels == PAPER_WIDTHS[4]
    with pytest.raises(ValueError, match="lacks resolution"):
        CascadeConfig(widths={8: 4, 16: 4})
    with pytest.raises(ValueError, match="powers of two"):
        CascadeConfig(resolutions=(8, 32))


@pytest.mark.parametrize("mask_channel, noise", [(False, 0), (True, 2)])
def test_cascade_shapes_no_nans_and_exact_paste(mask_channel, noise, tiny_widths):
    torch.manual_seed(0)
    model = Cascade(
        CascadeConfig(widths=tiny_widths, d_widths=tiny_widths, mask_channel=mask_channel, noise_channels=noise)
    )
    image, mask = _batch()
    levels = input_pyramid(image * mask, mask, RESOLUTIONS)
    outputs = model(levels)
    assert list(outputs) == list(RESOLUTIONS)
    for r, out in outputs.items():
        masked, m = levels[r]
        assert out.shape == (2, 3, r, r) and torch.isfinite(out).all()
        face = m.expand_as(out).bool()
        assert torch.equal(out[face], masked[face])  # bit-identical face pixels at every block
        assert not torch.equal(out[~face], masked[~face])
    # At full size the face pixels are the input's own.
    face = mask.expand_as(image).bool()
    assert torch.equal(outputs[128][face], image[face])
    assert model(levels, upto=32).keys() == {8, 16, 32}


def test_paste_face_is_a_selection_not_a_blend():
    out, masked = torch.full((1, 3, 2, 2), 0.3), torch.full((1, 3, 2, 2), -0.123456789)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    pasted = paste_face(out, masked, mask)
    assert (
        pasted[0, 0, 0, 0].item() == masked[0, 0, 0, 0].item() and pasted[0, 0, 0, 1].item() == out[0, 0, 0, 1].item()
    )


def test_input_pyramid_uses_only_face_pixels():
    image, mask = _batch(1)
    levels = input_pyramid(image * mask, mask, RESOLUTIONS)
    noisy = input_pyramid(image * mask + (1 - mask) * 0.77, mask, RESOLUTIONS)  # other background values
    for r in RESOLUTIONS:
        masked, m = levels[r]
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(masked, noisy[r][0])
        assert torch.all(masked[m.expand_as(masked) == 0] == -1)
    truth = image_pyramid(image, RESOLUTIONS)
    assert torch.allclose(truth[64][0, :, 0, 0], image[0, :, :2, :2].mean(dim=(1, 2)))
    # Well inside the face, a level's masked value is the ground truth's.
    assert torch.allclose(levels[16][0][0, :, 8, 8], truth[16][0, :, 8, 8], atol=1e-6)


@pytest.mark.parametrize("norm", ["spectral", "none"])
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_discriminator_gives_raw_scores_without_batch_norm(resolution, norm, tiny_widths):
    torch.manual_seed(0)
    d = Discriminator(resolution, tiny_widths, norm)
    x = torch.randn(4, 3, resolution, resolution) * 3
    y = d(x)
    assert y.shape == (4, 1) and torch.isfinite(y).all()
    assert not any(isinstance(m, (torch.nn.Sigmoid, torch.nn.BatchNorm2d)) for m in d.modules())
    d.eval()  # spectral norm's power iteration is frozen in eval mode
    # Raw scores are unbounded: a large scoring bias takes them past (0, 1).
    with torch.no_grad():
        d.net[-2].bias.fill_(5.0)
    assert (d(x) > 1).all()
    # Each image is scored alone: no batch statistics, so a batch of one gives the same score.
    torch.testing.assert_close(d(x[:1]), d(x)[:1], rtol=1e-4, atol=1e-5)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.Linear)) for m in d.modules())
    assert any(c.stride == (2, 2) for c in convs) or resolution == 4
    spectral = [c for c in convs if hasattr(c, "parametrizations")]
    assert len(spectral) == (len(convs) if norm == "spectral" else 0)


def test_he_initialisation():
    torch.manual_seed(0)
    block = GeneratorBlock(64, 3, {4: 64, 8: 64, 16: 64, 32: 64, 64: 64})
    conv = block.down[0][0]
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    expected = math.sqrt(2.0 / (1 + 0.2**2) / fan_in)
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(conv.bias == 0)


def test_discriminators_per_block(tiny_widths):
    cfg = CascadeConfig(widths=tiny_widths, d_widths=tiny_widths)
    ds = Discriminators(cfg)
    scores = ds({r: torch.zeros(2, 3, r, r) for r in RESOLUTIONS})
    assert set(scores) == set(RESOLUTIONS) and all(s.shape == (2, 1) for s in scores.values())
    assert np.prod(list(ds[128].net[0].weight.shape)) > 0


def test_explicit_noise_overrides_the_generator(tiny_widths):
    torch.manual_seed(0)
    model = Cascade(CascadeConfig(widths=tiny_widths, d_widths=tiny_widths, noise_channels=2))
    image, mask = _batch()
    levels = input_pyramid(image * mask, mask, RESOLUTIONS)
    g = torch.Generator().manual_seed(3)
    noise = {r: torch.randn(2, 2, r, r, generator=g) for r in RESOLUTIONS}
    a = model(levels, noise=noise)[128]
    b = model(levels, noise=noise, generator=torch.Generator().manual_seed(99))[128]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = model(levels, noise={r: -n for r, n in noise.items()})[128]
    assert not torch.equal(a, other)
    with pytest.raises(ValueError, match=r"noise\[8\] must be"):
        model(levels, noise={r: n[:1] for r, n in noise.items()})

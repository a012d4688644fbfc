"""The adversarial game: raw-score losses, a gradient that survives a confident discriminator, R1, mode seeking,
DiffAugment, losses kept in fp32 under bf16 autocast, and no loss beyond the photo's edge."""

from __future__ import annotations

import pytest
import torch

from augmentor.models import Discriminator
from augmentor.training.diffaugment import cutout, diff_augment, parse_policy, translation
from augmentor.training.losses import (
    CascadeLoss,
    LossConfig,
    d_adversarial,
    d_hinge,
    d_logistic,
    d_r1,
    g_adversarial,
    g_hinge,
    g_logistic,
    g_mode_seeking,
)

WIDTHS = {4: 8, 8: 8, 16: 8, 32: 8}
KINDS = ("lsgan", "hinge", "logistic")


def test_hinge_and_logistic_known_values():
    real, fake = torch.full((4, 1), 2.0), torch.full((4, 1), -0.5)
    assert d_hinge(real, fake).item() == pytest.approx(0.0 + 0.5)
    assert g_hinge(fake).item() == pytest.approx(0.5)
    softplus = lambda x: torch.log1p(torch.exp(torch.tensor(x))).item()
    assert d_logistic(real, fake).item() == pytest.approx(softplus(-2.0) + softplus(-0.5), rel=1e-6)
    assert g_logistic(fake).item() == pytest.approx(softplus(0.5), rel=1e-6)
    with pytest.raises(ValueError, match="adversarial_kind"):
        LossConfig(adversarial_kind="wgan")


def _confident_discriminator() -> Discriminator:
    """A discriminator sure that everything is fake: raw scores near -20."""
    torch.manual_seed(0)
    d = Discriminator(32, WIDTHS, "spectral").eval()
    with torch.no_grad():
        d.net[-2].bias.fill_(-20.0)
    return d


@pytest.mark.parametrize("kind", KINDS)
def test_generator_gets_an_adversarial_gradient_when_the_discriminator_is_confident(kind):
    d = _confident_discriminator()
    fake = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_(True)
    score = d(fake)
    assert (score < -10).all()  # confident
    (grad,) = torch.autograd.grad(g_adversarial(kind, score), fake)
    norm = grad.flatten(1).norm(dim=1).mean().item()
    assert norm > 1e-4
    # The sigmoid the discriminators used to end in passes almost nothing back at the same confidence.
    (saturated,) = torch.autograd.grad(((torch.sigmoid(d(fake)) - 1) ** 2).mean(), fake)
    assert saturated.flatten(1).norm(dim=1).mean().item() < norm * 1e-3


def test_discriminator_losses_fall_as_it_separates():
    for kind in KINDS:
        fake_target = 0.0 if kind == "lsgan" else -1.0  # LSGAN regresses fakes to 0, not below
        close = d_adversarial(kind, torch.full((8, 1), 0.1), torch.full((8, 1), -0.1), 1.0)
        apart = d_adversarial(kind, torch.full((8, 1), 1.0), torch.full((8, 1), fake_target), 1.0)
        assert apart < 0.5 * close, kind


def test_r1_penalty_known_value():
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    w = torch.randn(2, 4, 4)
    score = (x * w).sum(dim=(1, 2, 3))  # gradient w.r.t. each image is w
    assert d_r1(score, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_mode_seeking_rewards_different_outputs():
    z_a, z_b = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    out = torch.rand(2, 3, 8, 8)
    same = g_mode_seeking(out, out, z_a, z_b)
    apart = g_mode_seeking(out, (out + 0.05).clamp(max=1), z_a, z_b, bound=1.0)
    assert same.item() == 0.0 and apart.item() < -0.02
    assert g_mode_seeking(out, 1 - out, z_a, z_b, bound=0.1).item() == pytest.approx(-0.1)  # bounded
    grown = torch.zeros_like(out, requires_grad=True)  # a zero-weight noise path: outputs identical
    g_mode_seeking(grown, grown * 0, z_a, z_b).backward()
    assert torch.isfinite(grown.grad).all() and grown.grad.abs().max() < 1


def test_diffaugment_translation_shifts_and_cutout_zeros():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1) + 1
    g = torch.Generator().manual_seed(0)
    shifted = translation(x, ratio=0.25, generator=g)
    rows = {tuple(int(v) for v in s[0, :, 1]) for s in shifted}  # column 1 of each shifted image
    assert (2, 6, 10, 14) in rows and len(rows) > 1  # unshifted and shifted copies both occur
    assert set(shifted.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    out = cutout(torch.ones(256, 1, 16, 16), ratio=0.5, generator=g)
    zero_share = (out == 0).float().mean().item()
    assert 0.1 < zero_share <= 0.25 + 1e-6  # a square of half the side, sometimes past the edge
    assert parse_policy("color, translation") == ("color", "translation")
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        parse_policy("colour")


def test_diffaugment_is_differentiable_and_empty_policy_is_identity():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    assert diff_augment(x, "") is x
    y = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _loss_inputs():
    torch.manual_seed(0)
    real = {r: torch.rand(2, 3, r, r) * 2 - 1 for r in (32, 64)}
    fake = {r: (real[r] + 0.3 * torch.randn_like(real[r])).clamp(-1, 1) for r in real}
    return fake, real


def test_every_loss_term_under_bf16_autocast_matches_fp32():
    cfg = LossConfig(ssim=1.0, ssim_from=32, perceptual_from=32, identity_from=32, tv=1e-3, adversarial=0)
    loss = CascadeLoss(cfg, random_features=True)
    fake, real = _loss_inputs()
    _, reference = loss.generator(fake, real)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, under = loss.generator(fake, real)
    assert set(under) == set(reference) and {"ssim_64", "perc_64", "id_64", "l1_32", "tv_32"} <= set(under)
    for name, value in reference.items():
        assert under[name].dtype == torch.float32, name
        torch.testing.assert_close(under[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # The face network itself may run in bf16 (the trainer's choice): then only it is approximate.
    loss.face.bf16 = True
    _, bf16_net = loss.generator(fake, real)
    assert float(bf16_net["perc_64"]) != float(reference["perc_64"])  # the network did run in bf16
    torch.testing.assert_close(bf16_net["ssim_64"], reference["ssim_64"], rtol=1e-5, atol=1e-6)
    assert float(bf16_net["perc_64"]) == pytest.approx(float(reference["perc_64"]), rel=0.1)


def test_pixels_beyond_the_photo_edge_carry_no_loss():
    cfg = LossConfig(ssim=1.0, ssim_from=32, perceptual_from=32, identity_from=32, tv=0, adversarial=0)
    loss = CascadeLoss(cfg, random_features=True)
    fake, real = _loss_inputs()
    valid = {r: torch.ones(2, 1, r, r) for r in real}
    for r in real:
        valid[r][..., : r // 4] = 0  # the left quarter lay outside the photo
    garbage = {r: torch.where(valid[r] > 0, real[r], torch.rand_like(real[r])) for r in real}
    other = {r: torch.where(valid[r] > 0, real[r], -torch.rand_like(real[r])) for r in real}
    _, same = loss.generator({r: real[r].clone() for r in real}, garbage, None, valid)
    for name, value in same.items():
        assert float(value) == pytest.approx(0.0, abs=1e-6), name  # garbage beyond the edge costs nothing
    _, without = loss.generator({r: real[r].clone() for r in real}, garbage, None, None)
    assert float(without["l1_64"]) > 0.05  # without the validity mask it would
    # And what lies beyond the edge never reaches the generator: the gradient is the same for any fill there.
    grads = []
    for target in (garbage, other):
        fake64 = fake[64].clone().requires_grad_(True)
        total, _ = loss.generator({64: fake64}, {64: target[64]}, None, {64: valid[64]})
        (grad,) = torch.autograd.grad(total, fake64)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0

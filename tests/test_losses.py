"""Each loss on known inputs, and the combiners."""

from __future__ import annotations

import pytest
import torch

from augmentor.resources import MissingModelFileError
from augmentor.training.losses import (
    CascadeLoss,
    FaceFeatures,
    LossConfig,
    LpipsDistance,
    d_lsgan,
    g_feature_l1,
    g_identity,
    g_lsgan,
    g_pixel_l1,
    g_ssim,
    g_total_variation,
)


def test_pixel_l1_known_value():
    fake = torch.zeros(2, 3, 4, 4)
    real = torch.full((2, 3, 4, 4), 0.5)
    real[0] = -1.0
    assert g_pixel_l1(fake, real).item() == pytest.approx(0.75)


def test_total_variation_known_value():
    x = torch.zeros(2, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0  # one bright pixel: 4 neighbour differences of 1
    assert g_total_variation(x).item() == pytest.approx(4 / 2)
    ramp = torch.arange(4.0).repeat(1, 1, 4, 1)  # rows 0 1 2 3: dx = 1 everywhere, dy = 0
    assert g_total_variation(ramp).item() == pytest.approx(12.0)


def test_lsgan_known_values():
    ones, zeros = torch.ones(4, 1), torch.zeros(4, 1)
    assert g_lsgan(ones).item() == 0.0
    assert g_lsgan(zeros).item() == 1.0
    assert g_lsgan(torch.full((4, 1), 0.5)).item() == pytest.approx(0.25)
    assert d_lsgan(torch.full((4, 1), 0.9), zeros, real_label=0.9).item() == pytest.approx(0.0)
    # Label smoothing: a perfectly confident D is still penalised on real images.
    assert d_lsgan(ones, zeros, real_label=0.9).item() == pytest.approx(0.5 * 0.01)
    assert d_lsgan(zeros, ones, real_label=1.0).item() == pytest.approx(1.0)


def test_identity_and_feature_distances():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert g_identity(a, b).item() == pytest.approx((1 + 25) / 2)
    feats = {"x": torch.ones(1, 2, 2, 2), "y": torch.zeros(1, 3)}
    other = {"x": torch.zeros(1, 2, 2, 2), "y": torch.full((1, 3), 3.0)}
    assert g_feature_l1(feats, other, ("x", "y")).item() == pytest.approx(2.0)


@pytest.fixture(scope="module")
def face_features():
    return FaceFeatures()  # the real dlib-ResNet weights, from face-recognition-models


def test_face_features_see_real_faces(face_features, lfw_images):
    from augmentor.faces import FaceMasker

    masker = FaceMasker()
    faces = [masker(p) for p in lfw_images[:3]]
    x = torch.stack([torch.from_numpy(f.aligned).permute(2, 0, 1).float() / 127.5 - 1 for f in faces])
    feats = face_features(x, ("level4", "embedding"))
    assert feats["level4"].shape == (3, 32, 35, 35) and feats["embedding"].shape == (3, 128)
    emb = feats["embedding"]
    same = face_features(x.flip(-1), ("embedding",))["embedding"]
    # A mirrored face is closer to itself than to another person.
    assert (emb[0] - same[0]).norm() < (emb[0] - emb[1]).norm()
    assert not face_features.training and not any(p.requires_grad for p in face_features.parameters())
    face_features.train()
    assert not face_features.training


def test_cascade_loss_terms_and_weights(face_features):
    torch.manual_seed(0)
    loss = CascadeLoss(LossConfig())
    real = {r: torch.rand(2, 3, r, r) * 2 - 1 for r in (8, 16, 32, 64)}
    fake = {r: (v + 0.1 * torch.randn_like(v)).clamp(-1, 1).requires_grad_() for r, v in real.items()}
    d_scores = {r: torch.full((2, 1), 0.5) for r in real}
    total, logs = loss.generator(fake, real, d_scores)
    assert {"l1_8", "tv_8", "adv_8", "l1_32", "perc_32", "id_32", "perc_64", "id_64"} <= set(logs)
    assert "perc_16" not in logs and "id_16" not in logs  # only blocks >= 32
    cfg = loss.config
    expected = sum(
        {"l1": cfg.pixel, "tv": cfg.tv, "adv": cfg.adversarial, "perc": cfg.perceptual, "id": cfg.identity}[
            k.split("_")[0]
        ]
        * float(v)
        for k, v in logs.items()
    )
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fake.values())
    _, same_logs = loss.generator(real, real, None)
    assert float(same_logs["id_32"]) == pytest.approx(0.0, abs=1e-8) and float(same_logs["perc_64"]) == 0.0
    assert "adv_8" not in same_logs


def test_zero_weights_skip_terms():
    loss = CascadeLoss(LossConfig(identity=0, perceptual=0, tv=0, adversarial=0))
    assert loss.face is None and loss.lpips is None
    real = {32: torch.zeros(1, 3, 32, 32)}
    total, logs = loss.generator({32: torch.ones(1, 3, 32, 32)}, real, {32: torch.zeros(1, 1)})
    assert set(logs) == {"l1_32"} and total.item() == pytest.approx(1.0)
    d_total, d_logs = loss.discriminator({32: torch.ones(3, 1)}, {32: torch.zeros(3, 1)})
    assert set(d_logs) == {"d_32", "d_real_32", "d_fake_32"} and d_total.item() == pytest.approx(0.5 * 0.01)
    assert float(d_logs["d_real_32"]) == 1.0 and float(d_logs["d_fake_32"]) == 0.0


def test_ssim_loss_matches_the_evaluation_metric_and_has_gradients():
    from augmentor.evaluation.metrics import ssim

    torch.manual_seed(0)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(g_ssim(real, real)) == pytest.approx(0.0, abs=1e-6)
    fake = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1).requires_grad_(True)
    value = g_ssim(fake, real)
    to_uint8 = lambda x: ((x.detach() + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert float(value.detach()) == pytest.approx(1 - ssim(to_uint8(fake), to_uint8(real)).mean(), abs=0.01)
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    loss = CascadeLoss(LossConfig(identity=0, perceptual=0, tv=0, adversarial=0, pixel=0, ssim=2.0, ssim_from=32))
    total, logs = loss.generator({16: fake[:, :, :16, :16], 32: fake}, {16: real[:, :, :16, :16], 32: real})
    assert set(logs) == {"ssim_32"} and float(total.detach()) == pytest.approx(2 * float(value.detach()), rel=1e-5)


def test_lpips_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingModelFileError, match="TORCH_HOME") as info:
        LpipsDistance()
    assert "alexnet-owt-7be5be79.pth" in str(info.value)


def test_lpips_code_path_with_random_backbone(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    loss = CascadeLoss(LossConfig(perceptual_kind="lpips", lpips_random=True, identity=0))
    real = {32: torch.rand(2, 3, 32, 32) * 2 - 1}
    fake = {32: (real[32] + 0.3 * torch.randn_like(real[32])).requires_grad_()}
    total, logs = loss.generator(fake, real)
    assert float(logs["perc_32"]) > 0
    total.backward()
    assert fake[32].grad.abs().sum() > 0
    _, same = loss.generator(real, real)
    assert float(same["perc_32"]) == pytest.approx(0.0, abs=1e-6)

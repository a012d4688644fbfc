"""Tests for the pure-torch dlib face-recognition ResNet (augmentor.identity.network) against dlib itself."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from augmentor.identity.network import (
    FEATURE_NAMES,
    DlibResNet,
    _add_prev,
    face_chip_from_aligned,
    face_chip_transform,
    read_dlib_resnet,
)
from augmentor.resources import MissingModelFileError, dlib_model_path

logger = logging.getLogger(__name__)

MODEL = "dlib_face_recognition_resnet_model_v1.dat"
N_PARAMS = 5_614_592  # measured on the face-recognition-models 0.3.0 file
DESCRIPTOR_TOL = 1e-4  # measured max abs error vs dlib: 3.4e-7


def _model_file() -> Path:
    try:
        return dlib_model_path(MODEL)
    except MissingModelFileError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def net() -> DlibResNet:
    return DlibResNet.from_dat(_model_file()).eval()


@pytest.fixture(scope="module")
def dlib_faces(lfw_images: list[Path]) -> list[tuple[str, np.ndarray, object, np.ndarray]]:
    """``(name, image [H, W, 3] uint8, dlib shape, dlib chip [150, 150, 3] uint8)`` for every detected fixture face."""
    dlib = pytest.importorskip("dlib")
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    faces = []
    for path in lfw_images:
        img = np.asarray(Image.open(path).convert("RGB"))
        dets = detector(img, 1)
        if not dets:
            continue
        shape = predictor(img, max(dets, key=lambda d: d.area()))
        faces.append((path.name, img, shape, dlib.get_face_chip(img, shape, size=150, padding=0.25)))
    assert len(faces) >= 5, "dlib found too few faces in tests/fixtures/lfw"
    return faces


def _landmarks(shape) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # [68, 2]


def _to_tensor(img: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].to(dtype)  # [1, 3, H, W], 0..255


# ------------------------------------------------------------------------------------------------ parsing


def test_parse_real_file() -> None:
    state = read_dlib_resnet(_model_file())
    convs = {k[: -len(".weight")] for k, v in state.items() if k.endswith(".weight") and v.ndim == 4}
    assert len(convs) == 29
    assert state["stem.conv.weight"].shape == (32, 3, 7, 7)
    assert state["stem.conv.bias"].shape == (32,)
    assert state["level3.0.conv1.weight"].shape == (64, 32, 3, 3)
    assert state["level0.0.conv2.weight"].shape == (256, 256, 3, 3)
    assert state["level2.2.affine2.weight"].shape == (128,)
    assert state["fc.weight"].shape == (128, 256)
    np.testing.assert_allclose(state["input_mean"], [122.782, 117.001, 104.298], atol=1e-4)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in state.values())
    assert sum(v.size for k, v in state.items() if k != "input_mean") == N_PARAMS
    net = DlibResNet()
    assert sum(p.numel() for p in net.parameters()) == N_PARAMS
    assert set(state) == set(net.state_dict())


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / MODEL
    with pytest.raises(MissingModelFileError, match="face-recognition-models") as info:
        DlibResNet.from_dat(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("keep", [0, 5, 300, 10_000, 0.5, -1])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    data = _model_file().read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="truncated|corrupt|unexpected"):
        read_dlib_resnet(bad)


def test_not_this_network(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.dat"
    bad.write_bytes(b"\x01\x01\x05hello world")
    with pytest.raises(ValueError):
        read_dlib_resnet(bad)
    with pytest.raises(ValueError):  # a valid dlib file of another kind
        read_dlib_resnet(dlib_model_path("shape_predictor_5_face_landmarks.dat"))


# ------------------------------------------------------------------------------------------------ network


def test_add_prev_zero_pads() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = _add_prev(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, :3, :3].eq(11).all() and out[0, 0, 3, :].eq(10).all() and out[0, 0, :, 3].eq(10).all()
    assert out[0, 1, :3, :3].eq(1).all() and out[0, 1, 3, :].eq(0).all()


def test_features_shapes() -> None:
    net = DlibResNet().eval()
    x = torch.rand(2, 3, 150, 150)  # [N, 3, 150, 150], in [0, 1]
    feats = net.features(x)
    assert tuple(feats) == FEATURE_NAMES
    sizes = {
        "stem": (32, 35),
        "level4": (32, 35),
        "level3": (64, 17),
        "level2": (128, 8),
        "level1": (256, 4),
        "level0": (256, 2),
    }
    for name, (ch, side) in sizes.items():
        assert feats[name].shape == (2, ch, side, side), name
    assert feats["pooled"].shape == (2, 256) and feats["embedding"].shape == (2, 128)
    assert torch.equal(net(x), feats["embedding"])
    partial = net.features(x, ["level3"])
    assert list(partial) == ["level3"] and torch.equal(partial["level3"], feats["level3"])
    with pytest.raises(ValueError, match="unknown feature"):
        net.features(x, ["conv9"])
    with pytest.raises(ValueError, match="150"):
        net(torch.rand(1, 3, 128, 128))


def test_descriptors_match_dlib(net: DlibResNet, dlib_faces) -> None:
    dlib = pytest.importorskip("dlib")
    rec = dlib.face_recognition_model_v1(str(_model_file()))
    chips = np.stack([chip for _, _, _, chip in dlib_faces])  # [N, 150, 150, 3] uint8
    ref = np.stack([np.array(rec.compute_face_descriptor(chip)) for chip in chips])  # [N, 128]
    # The chip overload agrees with dlib's own landmark path (get_face_chip + descriptor).
    _, img, shape, _ = dlib_faces[0]
    np.testing.assert_allclose(np.array(rec.compute_face_descriptor(img, shape)), ref[0], atol=1e-6)
    with torch.no_grad():
        out = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255.0).double().numpy()
    err = np.abs(out - ref).max()
    logger.info("max abs descriptor error vs dlib over %d faces: %.3g", len(chips), err)
    assert err < DESCRIPTOR_TOL, err
    # Same-person distances stay the same: every face is its own nearest neighbour in both.
    assert (np.linalg.norm(out[:, None] - ref[None], axis=-1).argmin(1) == np.arange(len(out))).all()


def test_gradients_reach_input(net: DlibResNet, dlib_faces) -> None:
    chip = torch.from_numpy(dlib_faces[0][3]).permute(2, 0, 1)[None].float() / 255.0
    x = chip.clone().requires_grad_(True)
    frozen = net.requires_grad_(False)
    try:
        target = frozen(torch.flip(chip, dims=[3])).detach()
        loss = (frozen(x) - target).pow(2).sum() + frozen.features(x, ["level2"])["level2"].mean()
        loss.backward()
    finally:
        net.requires_grad_(True)
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ face chips


def test_chip_transform_matches_dlib_details(dlib_faces) -> None:
    dlib = pytest.importorskip("dlib")
    for name, _, shape, _ in dlib_faces:
        details = dlib.get_face_chip_details(shape, 150, 0.25)
        rect, angle = details.rect, details.angle
        mat = face_chip_transform(torch.from_numpy(_landmarks(shape)))[0].numpy()  # [2, 3]
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
        for chip_xy, corner in [
            ((0, 0), (rect.left(), rect.top())),
            ((149, 0), (rect.right(), rect.top())),
            ((149, 149), (rect.right(), rect.bottom())),
        ]:
            expected = centre + rot @ (np.array(corner) - centre)
            np.testing.assert_allclose(mat @ np.array([*chip_xy, 1.0]), expected, atol=1e-6, err_msg=name)


def test_chip_matches_dlib_get_face_chip(dlib_faces) -> None:
    for name, img, shape, chip in dlib_faces:
        ours = face_chip_from_aligned(_to_tensor(img, torch.float64), torch.from_numpy(_landmarks(shape)))
        ours = ours[0].permute(1, 2, 0).numpy()  # [150, 150, 3], 0..255
        diff = ours - chip.astype(np.float64)
        # dlib interpolates bilinearly too but truncates to uint8: 0 <= ours - dlib < 1 everywhere, ~0.5 on average.
        assert diff.min() > -1e-6 and diff.max() < 1 + 1e-6, name
        assert abs(diff.mean() - 0.5) < 0.05, name
        assert (np.floor(ours + 1e-9) == chip).mean() > 0.999, name


def test_chip_from_aligned_crop_gradients(net: DlibResNet, dlib_faces) -> None:
    _, img, shape, _ = dlib_faces[0]
    # A 128x128 "aligned crop": the image resized, landmarks scaled with it (pixel centres at integer coordinates).
    big = _to_tensor(img) / 255.0  # [1, 3, 250, 250]
    crop = torch.nn.functional.interpolate(big, size=(128, 128), mode="bilinear", align_corners=True)
    lm = torch.from_numpy(_landmarks(shape)) * (127 / (img.shape[1] - 1))  # [68, 2]
    crop = crop.expand(2, -1, -1, -1).clone().requires_grad_(True)
    chips = face_chip_from_aligned(crop, lm)  # [68, 2] broadcast to the batch
    assert chips.shape == (2, 3, 150, 150) and chips.dtype == torch.float32
    emb = net(chips)
    emb.square().sum().backward()
    assert crop.grad is not None and torch.isfinite(crop.grad).all() and crop.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="landmark"):
        face_chip_from_aligned(crop.detach(), torch.zeros(3, 68, 2))

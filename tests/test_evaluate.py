"""Evaluation: metrics on known inputs, baselines, and the whole report on fixture faces."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.evaluation.baselines import BASELINES, fill_all
from augmentor.evaluation.evaluate import EvalSettings, evaluate, select
from augmentor.evaluation.metrics import FaceDescriptor, ResNet50Features, feature_fid, pearson, ssim, to_tensor
from augmentor.resources import MissingModelFileError


@pytest.fixture(scope="module")
def aligned_faces(lfw_images):
    from augmentor.faces import FaceMasker

    masker = FaceMasker()
    found = [masker(p) for p in lfw_images]
    return np.stack([f.aligned for f in found]), np.stack([f.mask for f in found])


@pytest.fixture(scope="module")
def descriptor():
    return FaceDescriptor()


@pytest.fixture
def no_torch_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_identical_images_score_perfectly_and_shifted_ones_lower(aligned_faces, descriptor):
    images, _ = aligned_faces
    shifted = np.roll(images, 6, axis=2)
    same_ssim, shifted_ssim = ssim(images, images), ssim(images, shifted)
    np.testing.assert_allclose(same_ssim, 1.0, atol=1e-5)
    assert np.all(shifted_ssim < 0.9)
    feats = descriptor(to_tensor(images))
    moved = descriptor(to_tensor(shifted))
    np.testing.assert_allclose(pearson(feats, feats).numpy(), 1.0, atol=1e-5)
    assert torch.all(pearson(feats, moved) < 1 - 1e-3)
    fid_same, kid_same, _ = feature_fid(feats, feats)
    fid_moved, _, _ = feature_fid(feats, moved)
    assert abs(fid_same) < 1e-3 and abs(kid_same) < 1e-2
    assert fid_moved > fid_same + 1e-3


def test_pearson_known_values():
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    b = torch.tensor([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]])
    np.testing.assert_allclose(pearson(a, b).numpy(), [1.0, -1.0], atol=1e-6)


def test_baselines_keep_face_pixels_and_fill_the_rest(aligned_faces):
    images, masks = aligned_faces
    masked = images * masks[..., None]
    inside = masks.astype(bool)
    for name, fill in BASELINES.items():
        out = fill_all(fill, masked, masks)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert np.array_equal(out[inside], images[inside]), name
        filled = out[~inside]
        if name == "black mask":
            assert not filled.any()
        else:
            assert filled.mean() > 10, name
    ns = fill_all(BASELINES["cv2 Navier-Stokes"], masked, masks)
    assert ssim(ns, images).mean() > ssim(masked, images).mean()


def test_resnet50_features_from_a_local_file(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path / "r50.safetensors"
    save_file({k: v.contiguous() for k, v in resnet50(num_classes=10).state_dict().items()}, str(path))
    net = ResNet50Features(path)
    out = net(torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    with pytest.raises(MissingModelFileError, match="not found"):
        ResNet50Features(tmp_path / "missing.pth")


def test_select_is_deterministic():
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(50)]})
    a, b, c = select(table, 10, 0), select(table, 10, 0), select(table, 10, 1)
    assert list(a.image_id) == list(b.image_id) and list(a.image_id) != list(c.image_id)
    assert len(select(table, None, 0)) == 50


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from augmentor.models import Cascade, CascadeConfig
    from augmentor.training.checkpoints import save_generator

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    save_generator(Cascade(CascadeConfig(widths={r: 4 for r in (4, 8, 16, 32, 64, 128)})), path)
    return path


@pytest.fixture
def lfw_tree(lfw_images, tmp_path):
    root = tmp_path / "lfw"
    for path in lfw_images[:6]:
        folder = root / path.stem.rsplit("_", 1)[0]
        folder.mkdir(parents=True)
        (folder / path.name).write_bytes(path.read_bytes())
    return root


def test_evaluate_writes_every_report(lfw_tree, tiny_checkpoint, tmp_path, no_torch_hub):
    from augmentor.datasets.adapters import load_dataset

    out = tmp_path / "eval"
    report = evaluate(load_dataset("lfw", lfw_tree), out, {"tiny": tiny_checkpoint}, EvalSettings(limit=5, workers=1))
    assert report["images_scored"] == 5
    assert set(report["methods"]) == {*BASELINES, "tiny"}
    black = report["methods"]["black mask"]
    assert black["mean_ssim"] < report["methods"]["cv2 Navier-Stokes"]["mean_ssim"]
    assert 0 < black["mean_match"] < 1 and black["fid_face"] > 0
    assert set(report["unavailable"]) == {"LPIPS", "PieAPP", "FID-Inception"}
    table = (out / "table.md").read_text()
    assert "| cv2 Navier-Stokes |" in table and "Cascaded (paper)" in table and "not available here" in table
    assert "FID-face (dlib 128-D)" in table and "FID (Inception)" in table
    for name in ("comparison.png", "match_histogram.png"):
        assert (out / name).stat().st_size > 5000
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert len(per_image) == 5 * 5 and {"match", "ssim", "dlib_l2", "face_perceptual"} <= set(per_image)
    assert json.loads((out / "metrics.json").read_text())["methods"]["tiny"]["mean_ssim"] > 0


def test_cli_evaluate(lfw_tree, tiny_checkpoint, tmp_path, no_torch_hub):
    runner = CliRunner()
    base = ["evaluate", "--root", str(lfw_tree), "--limit", "3", "--workers", "1"]
    from augmentor import hallucinator

    with pytest.MonkeyPatch.context() as patch:  # an install that lost its shipped weights
        patch.setattr(hallucinator, "DEFAULT_WEIGHTS", tmp_path / "missing")
        missing = runner.invoke(main, [*base, "--out", str(tmp_path / "a")])
    assert missing.exit_code == 1 and "--baselines-only" in missing.output
    not_ckpt = runner.invoke(main, [*base, "--out", str(tmp_path / "b"), "--model", str(tmp_path)])
    assert not_ckpt.exit_code == 2 and "not a checkpoint folder" in not_ckpt.output
    ok = runner.invoke(main, [*base, "--out", str(tmp_path / "c"), "--model", f"mine={tiny_checkpoint}"])
    assert ok.exit_code == 0, ok.output
    assert "| mine |" in ok.output and "| cv2 Telea |" in ok.output

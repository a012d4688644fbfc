"""Evaluation: metrics on known inputs, baselines, and the whole report on fixture faces."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.evaluation.baselines import BASELINES, fill_all
from augmentor.evaluation.evaluate import REAL, EvalSettings, evaluate, select, select_reference
from augmentor.evaluation.metrics import (
    FaceDescriptor,
    ResNet50Features,
    frechet_distance,
    kernel_distance,
    pearson,
    ssim,
    to_tensor,
)
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
    fid_same, kid_same = frechet_distance(feats.numpy(), feats.numpy()), kernel_distance(feats.numpy(), feats.numpy())
    fid_moved = frechet_distance(feats.numpy(), moved.numpy())
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


def test_select_is_deterministic_and_the_reference_disjoint():
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(50)]})
    a, b, c = select(table, 10, 0), select(table, 10, 0), select(table, 10, 1)
    assert list(a.image_id) == list(b.image_id) and list(a.image_id) != list(c.image_id)
    assert len(select(table, None, 0)) == 50
    ref = select_reference(table, a, 30, 0)
    assert len(ref) == 30 and not set(ref.image_id) & set(a.image_id)
    assert list(ref.image_id) == list(select_reference(table, a, 30, 0).image_id)
    assert len(select_reference(table, a, 100, 0)) == 40  # everything left


def test_scores_order_a_degradation_ladder(aligned_faces):
    """Original > light blur > heavy blur of the background on every per-image and set-level metric."""
    import cv2

    from augmentor.evaluation.scorer import Scorer

    images, masks = aligned_faces
    originals, reference = images[:5], images[5:]
    inside = masks[:5, ..., None].astype(bool)

    def blur(sigma):
        return np.where(inside, originals, np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in originals]))

    scorer = Scorer(originals, EvalSettings(batch_size=8), torch.device("cpu"), masks=masks[:5], reference=reference)
    ladder = [scorer.per_image(x) | scorer.set_level(x) for x in (originals, blur(1.0), blur(3.0))]
    for better, worse in itertools.pairwise(ladder):
        assert np.all(better["ssim"] > worse["ssim"]) and np.all(better["ssim_background"] > worse["ssim_background"])
        assert np.all(better["match"] > worse["match"])
        assert better["dlib_l2"].mean() < worse["dlib_l2"].mean()
        assert better["face_perceptual"].mean() < worse["face_perceptual"].mean()
    np.testing.assert_allclose(ladder[0]["ssim"], 1.0, atol=1e-9)


def test_scorer_reuses_features_only_when_handed_them(aligned_faces, monkeypatch):
    """One dlib pass per set when the caller passes the set's features; never another set's features."""
    from augmentor.evaluation.scorer import Scorer

    images, masks = aligned_faces
    originals, reference, other = images[:3], images[3:7], images[7:10]
    scorer = Scorer(originals, EvalSettings(batch_size=8), torch.device("cpu"), masks=masks[:3], reference=reference)
    passes = []
    describe = scorer.dlib.describe
    monkeypatch.setattr(scorer.dlib, "describe", lambda x: passes.append(len(x)) or describe(x))
    fresh = scorer.per_image(other) | scorer.set_level(other)
    assert len(passes) == 2  # each call described the set itself
    features = scorer.features(other)
    reused = scorer.per_image(other, features) | scorer.set_level(other, features)
    assert len(passes) == 3  # one pass for both
    for name, value in fresh.items():
        np.testing.assert_allclose(reused[name], value, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(scorer.features(originals).as_numpy(), scorer.original.as_numpy())
    with pytest.raises(ValueError, match="features of 3 images passed with 2"):
        scorer.per_image(other[:2], features)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_checkpoints):
    """The shared tiny cascade as a training run's ``checkpoint/`` (the label comes from the run folder)."""
    import shutil

    return shutil.copytree(tiny_checkpoints / "plain", tmp_path_factory.mktemp("run") / "checkpoint")


@pytest.fixture
def lfw_tree(lfw_images, tmp_path):
    root = tmp_path / "lfw"
    for path in lfw_images:
        folder = root / path.stem.rsplit("_", 1)[0]
        folder.mkdir(parents=True)
        (folder / path.name).write_bytes(path.read_bytes())
    return root


def test_evaluate_orders_the_metrics_on_real_faces(lfw_tree, tiny_checkpoint, tmp_path, no_torch_hub):
    from augmentor.datasets.adapters import load_dataset

    out = tmp_path / "eval"
    settings = EvalSettings(limit=5, workers=1, num_bootstrap=50, swd_bootstrap=10, chip_identity=True)
    report = evaluate(load_dataset("lfw", lfw_tree), out, {"tiny": tiny_checkpoint}, settings)
    assert report["images_scored"] == 5 and report["reference_images"] == 5 and report["precision"] == "fp32"
    assert set(report["methods"]) == {*BASELINES, "tiny", REAL}
    m = report["methods"]
    black, mean, ns, real = m["black mask"], m["mean-colour fill"], m["cv2 Navier-Stokes"], m[REAL]
    # SSIM: any fill beats black, smooth inpainting beats a flat colour over the whole image; the background alone
    # scores below the whole image (the pasted-back face scores high for every method); black's background is ~0
    assert black["mean_ssim"] < mean["mean_ssim"] < ns["mean_ssim"]
    assert black["mean_ssim_background"] < 0.05
    assert min(mean["mean_ssim_background"], ns["mean_ssim_background"]) > 0.2
    for name in BASELINES:
        assert m[name]["mean_ssim_background"] < m[name]["mean_ssim"] - 0.1
    # set-level distances against the disjoint real set: the real originals are the floor
    for key in ("fid_face", "kid_face", "swd_128", "swd_64", "swdr_128", "swdr_64", "seam_swdr_128"):
        assert real[key] < black[key], key
    assert "seam_swd_32" not in real  # seam SWD at the two finest levels only
    # the face chip is nearly all face pixels, identical by construction: dlib calls every fill the same person
    assert black["mean_same_person"] == 1.0 and black["mean_chip_l2"] < black["mean_dlib_l2"]
    metrics = {d["metric"] for d in report["differences"]}
    assert {"ssim", "ssim_background", "fid_face", "kid_face", "swd_128", "swd_16", "same_person"} <= metrics
    assert {"swdr_128", "swdr_16", "seam_swd_128", "seam_swd_64", "seam_swdr_128", "seam_swdr_64"} <= metrics
    assert report["c2st"]["accuracies"] == {}  # 5 images: under c2st_min_images, no judge is trained
    for d in report["differences"]:
        assert d["model"] == "tiny" and d["baseline"] in BASELINES and d["low"] <= d["high"], d
    table = (out / "table.md").read_text()
    assert "| cv2 Navier-Stokes |" in table and f"| {REAL} |" in table and "Cascaded (paper)" in table
    assert "SSIM bg" in table and "SWD128" in table and "95% CI" in table and "**fp32**" in table
    assert "Warning:** 5 images is under 2x the 128-D" in table and "not available here" in table
    for name in ("comparison.png", "match_histogram.png"):
        assert (out / name).stat().st_size > 5000
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert len(per_image) == 5 * 5 and {"match", "ssim", "ssim_background", "dlib_l2"} <= set(per_image)
    assert json.loads((out / "metrics.json").read_text())["methods"]["tiny"]["mean_ssim"] > 0


def test_cli_evaluate(lfw_tree, tiny_checkpoint, tmp_path, no_torch_hub):
    runner = CliRunner()
    base = ["evaluate", "--root", str(lfw_tree), "--limit", "3", "--workers", "1", "--donor-pool", "0"]
    from augmentor import hallucinator

    with pytest.MonkeyPatch.context() as patch:  # an install that lost its shipped weights
        patch.setattr(hallucinator, "DEFAULT_WEIGHTS", tmp_path / "missing")
        missing = runner.invoke(main, [*base, "--out", str(tmp_path / "a")])
    assert missing.exit_code == 1 and "--baselines-only" in missing.output
    not_ckpt = runner.invoke(main, [*base, "--out", str(tmp_path / "b"), "--model", str(tmp_path)])
    assert not_ckpt.exit_code == 2 and "not a checkpoint folder" in not_ckpt.output
    ok = runner.invoke(
        main,
        [*base, "--out", str(tmp_path / "c"), "--model", f"mine={tiny_checkpoint}", "--bootstrap", "20"]
        + ["--precision", "bf16", "--reference-size", "4", "--model", f"again={tiny_checkpoint}"],
    )
    assert ok.exit_code == 0, ok.output
    assert "| mine |" in ok.output and "| cv2 Telea |" in ok.output and "**bf16**" in ok.output
    assert "reference set: 4 disjoint real images" in ok.output
    # a second model is also compared with the first: the same weights differ by exactly 0 on every metric
    against = json.loads((tmp_path / "c" / "metrics.json").read_text())["model_differences"]
    assert {d["metric"] for d in against} >= {"ssim", "ssim_background", "fid_face", "swd_128", "swd_64"}
    for d in against:
        assert (d["model"], d["baseline"]) == ("again", "mine") and d["value"] == 0.0, d
        assert d["verdict"] == "not established", d
    assert "Each model minus the first model (mine)" in ok.output and "| again | SSIM | mine | +0.0000 |" in ok.output


def test_cli_evaluate_adds_the_nearest_donor_row(lfw_tree, face_shards, tmp_path, no_torch_hub):
    import json

    from augmentor.evaluation.evaluate import DONOR

    out = tmp_path / "donor"
    args = ["evaluate", "--root", str(lfw_tree), "--limit", "3", "--workers", "1", "--baselines-only"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--donors", str(face_shards), "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    assert f"| {DONOR} |" in result.output
    report = json.loads((out / "metrics.json").read_text())
    assert DONOR in report["methods"] and DONOR not in report["baselines"]
    assert {"mean_ssim", "swd_128"} <= set(report["methods"][DONOR])
    assert (face_shards / "donor_bank" / "bank.json").is_file()  # built once, beside the shards
    missing = CliRunner().invoke(main, [*args, "--out", str(out), "--donors", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_evaluate_judges_realism_with_donors_of_the_same_dataset_and_copies(lfw_root, tmp_path, no_torch_hub):
    """Donor rows from the dataset's other identities, both compositions, K copies with their diversity, and the
    C2ST for every set but the flat fills."""
    from augmentor.datasets.adapters import load_dataset
    from augmentor.evaluation.evaluate import DONOR, DONOR_REFINED

    table = load_dataset("lfw", lfw_root)
    settings = EvalSettings(
        limit=6, reference_size=6, workers=1, num_bootstrap=20, swd_bootstrap=10, copies=2, c2st_seeds=(0,),
        c2st_min_images=2, c2st_regions=("whole", "jaw"),
    )
    report = evaluate(table, tmp_path / "eval", {}, settings)
    used = set(pd.read_parquet(tmp_path / "eval" / "per_image.parquet")["image_id"])
    donors = report["donors"]
    assert donors["bank_size"] >= 2 and (tmp_path / "eval" / "donors").is_dir()
    assert {DONOR, DONOR_REFINED} <= set(report["methods"])
    # the donors share no identity with an evaluated face
    bank = np.load(tmp_path / "eval" / "donors" / "donor_bank" / "features.npz")
    evaluated = {i.rsplit("_", 1)[0] for i in used}
    assert not evaluated & set(bank["identity"].tolist())
    judged = report["c2st"]["accuracies"]
    assert set(judged) == {*BASELINES, DONOR, DONOR_REFINED, REAL} - {"black mask", "mean-colour fill"}
    for regions in judged.values():
        assert set(regions) == {"whole", "jaw"} and all(0 <= a <= 1 for v in regions.values() for a in v)
    copies = report["copies"]
    assert set(copies) == {DONOR, DONOR_REFINED}  # the baselines make one copy
    for c in copies.values():
        assert c["copies"] == 2 and c["context_grey_difference"] > 5 and len(c["per_copy"]) == 2
    between = {(d["model"], d["baseline"]) for d in report["model_differences"]}
    assert between == {(DONOR_REFINED, DONOR)}
    table_md = (tmp_path / "eval" / "table.md").read_text()
    assert "## Realism" in table_md and "C2ST whole" in table_md and "## Copies" in table_md


def test_cli_evaluate_refuses_two_models_with_one_label(lfw_tree, tiny_checkpoint, tmp_path):
    """Bug: --model runs/R/checkpoint --model runs/R/last both became "R" and only one was evaluated; --progan could
    silently replace a --model ProGAN=...."""
    last = tiny_checkpoint.parent / "last"
    if not last.exists():
        last.symlink_to(tiny_checkpoint)
    base = ["evaluate", "--root", str(lfw_tree), "--limit", "3", "--out", str(tmp_path / "e")]
    both = CliRunner().invoke(main, [*base, "--model", str(tiny_checkpoint), "--model", str(last)])
    assert both.exit_code == 2 and "two models are labelled" in both.output and "NAME=PATH" in both.output
    progan = CliRunner().invoke(
        main, [*base, "--model", f"ProGAN={tiny_checkpoint}", "--progan", str(tiny_checkpoint)]
    )
    assert progan.exit_code == 2 and "'ProGAN'" in progan.output
    assert not (tmp_path / "e" / "metrics.json").exists()

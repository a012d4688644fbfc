"""Recognition: manifests and split, the LFW pairs protocol, backbones, fine-tuning, resume, verify-lfw, compare."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import finetune_config

from augmentor.cli import main
from recognition import lfw
from recognition.backbone import (
    BACKBONES,
    NetConfig,
    RecognitionNet,
    arcface_logits,
    load_init,
    load_model,
    save_model,
)
from recognition.data import HALLUCINATED, REAL, FaceData, ManifestError, read_training_table, split_by_source
from recognition.finetune import FinetuneConfig, Finetuner, finetune, lr_factor

ROOT = Path(__file__).resolve().parents[1]
NAMES = 10  # people in the synthetic LFW folder (conftest.lfw_root: LFW_PEOPLE), two images each


# --------------------------------------------------------------------------------------------------- fixtures


def _people(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != "No_Face")


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory, lfw_root) -> Path:
    """``augmentor preprocess`` output of the 20 face images (the "real" manifest)."""
    from augmentor.preprocessing.preprocess import preprocess

    rel = [f"{n}/{n}_{k:04d}.jpg" for n in _people(lfw_root) for k in (1, 2)]
    listing = pd.DataFrame(
        {"image_id": rel, "identity": [r.split("/")[0] for r in rel], "path": [str(lfw_root / r) for r in rel]}
    )
    out = tmp_path_factory.mktemp("real")
    summary = preprocess(listing, out, workers=1, progress=False)
    assert summary.status_counts == {"ok": 2 * NAMES}
    return out


@pytest.fixture(scope="module")
def fake_manifest(tmp_path_factory, real_shards) -> Path:
    """A pipeline manifest with one hallucinated copy per real image (noise outside the face mask), relative
    output paths, and one failed row."""
    from augmentor.preprocessing.shards import decode_mask, decode_png, encode_png, read_shards

    out = tmp_path_factory.mktemp("aug")
    (out / "images").mkdir()
    table = read_shards(real_shards, columns=["image_id", "identity", "source_path", "aligned", "mask"], status="ok")
    rng = np.random.default_rng(0)
    rows = []
    for i, row in enumerate(table.to_pylist()):
        image, mask = decode_png(row["aligned"]), decode_mask(row["mask"])[..., None]
        noise = rng.integers(0, 255, image.shape, dtype=np.uint8)
        rel = f"images/{i:04d}.png"
        (out / rel).write_bytes(encode_png(image * mask + noise * (1 - mask)))
        rows.append(
            {
                "image_id": row["image_id"],
                "identity": row["identity"],
                "label": i // 2,
                "source_path": row["source_path"],
                "output_path": rel,
                "status": "ok",
                "reason": "",
                "model_id": "test",
                "copy": 0,
                "mask_area": float(mask.mean()),
                "match_score": 0.9,
            }
        )
    rows.append({**rows[0], "image_id": "Ghost/Ghost_0001.jpg", "identity": "Ghost", "output_path": None})
    rows[-1].update(status="error", reason="no_face: test")
    pq.write_table(pa.Table.from_pylist(rows), out / "manifest.parquet")
    return out / "manifest.parquet"


def _tiny_cfg(manifests, **changes) -> FinetuneConfig:
    settings = {"data.image_size": 112, "data.val_fraction": 0.2, "batch_size": 4, "max_steps_per_epoch": 2}
    settings |= {"epochs": 1, "optim.lr": 0.01, **changes}
    return finetune_config(manifests, settings, ROOT / "configs" / "recognition" / "finetune.yaml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, real_shards, fake_manifest) -> Path:
    """One CPU epoch of ResNet-18 on real + hallucinated faces, through the CLI."""
    out = tmp_path_factory.mktemp("runs")
    args = ["finetune", "--manifest", str(real_shards), "--manifest", str(fake_manifest), "--out", str(out)]
    args += ["--config", str(ROOT / "configs" / "recognition" / "finetune.yaml"), "--backbone", "resnet18"]
    args += ["--image-size", "112", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    args += ["--set", "data.loader_workers=0", "--set", "max_steps_per_epoch=3", "--set", "data.val_fraction=0.2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    return run_dir


# --------------------------------------------------------------------------------------------------- pairs files


def _write_pairs(path: Path, folds: int | None, matched: list[str], mismatched: list[str]) -> Path:
    n = len(matched) // (folds or 1)
    lines = [f"{folds}\t{n}" if folds else f"{n}"]
    for k in range(folds or 1):
        lines += matched[k * n : (k + 1) * n] + mismatched[k * n : (k + 1) * n]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_pairs_view2_and_view1(tmp_path):
    matched = ["Abel_Pacheco\t1\t4", "Akhmed_Zakayev\t1\t3", "Amber_Tamblyn\t1\t2", "Anders_Fogh_Rasmussen\t1\t3"]
    mismatched = ["AJ_Cook\t1\tMarsha_Thomason\t1", "Aaron_Sorkin\t2\tFrank_Keating\t1", "A\t1\tB\t12", "C\t3\tD\t4"]
    pairs = lfw.read_pairs(_write_pairs(tmp_path / "pairs.txt", 2, matched, mismatched))
    assert len(pairs) == 8 and pairs.num_folds == 2
    assert pairs.left[0] == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert pairs.right[0] == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    assert (pairs.left[2], pairs.right[2]) == ("AJ_Cook/AJ_Cook_0001.jpg", "Marsha_Thomason/Marsha_Thomason_0001.jpg")
    assert (pairs.left[6], pairs.right[6]) == ("A/A_0001.jpg", "B/B_0012.jpg")
    np.testing.assert_array_equal(pairs.same, [1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(pairs.fold, [0, 0, 0, 0, 1, 1, 1, 1])
    limited = pairs.limit(1)
    assert len(limited) == 4 and limited.same.tolist() == [True, False, True, False]

    dev = lfw.read_pairs(_write_pairs(tmp_path / "dev.txt", None, matched[:2], mismatched[:2]))
    assert dev.num_folds == 1 and len(dev) == 4 and dev.fold.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("2\t1\nA\t1\t2\nB\t1\tC\t1\n", "promises"),
        ("1\t2\nA\t1\t2\nB\t1\tC\t1\nD\t1\t2\nE\t1\tF\t1\n", "matched pair"),
        ("1\t1\nA\tone\t2\nB\t1\tC\t1\n", "integers"),
        ("1\t2\t3\nA\t1\t2\n", "header"),
    ],
)
def test_read_pairs_rejects_malformed_files(tmp_path, text, message):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(lfw.PairsError, match=message):
        lfw.read_pairs(path)
    with pytest.raises(FileNotFoundError):
        lfw.read_pairs(tmp_path / "missing.txt")


# --------------------------------------------------------------------------------------------------- protocol


def test_roc_tpr_and_auc_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(1)
    same = rng.random(3000) < 0.5
    scores = np.round(rng.normal(same * 1.5, 1.0), 2)  # rounded: many ties
    fpr, tpr, thr = lfw.roc(scores, same)
    ref_fpr, ref_tpr, ref_thr = roc_curve(same, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thr[1:], ref_thr[1:])
    for target in (0.1, 0.01, 0.001):
        assert lfw.tpr_at_fpr(scores, same, target) == pytest.approx(ref_tpr[ref_fpr <= target].max())
    assert lfw.auc(scores, same) == pytest.approx(roc_auc_score(same, scores))
    assert 0.2 < lfw.eer(scores, same) < 0.3


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(2)
    same = rng.random(400) < 0.5
    scores = rng.normal(same * 1.0, 1.0)
    threshold, acc = lfw.best_threshold(scores, same)
    brute = max(np.mean((scores > t) == same) for t in np.r_[scores, scores.min() - 1])
    assert acc == pytest.approx(brute)
    assert lfw.accuracy(scores, same, threshold) == pytest.approx(acc)


def test_kfold_protocol_known_answer():
    """Each fold's threshold must come from the other folds only; the TPR blocks on a known answer."""
    folds, per = 10, 300
    same = np.tile(np.r_[np.ones(per, bool), np.zeros(per, bool)], folds)
    fold = np.repeat(np.arange(folds), 2 * per)
    rng = np.random.default_rng(3)
    # Threshold leakage: fold 3's impostors all score in (0.45, 0.55), every other fold's below 0.2, and every
    # genuine pair above 0.6. The other folds put the cut near 0.4, so fold 3 loses all its impostors (accuracy
    # 0.5); a threshold chosen on all folds, fold 3 included, would cut at 0.55-0.6 and score fold 3 perfectly.
    scores = np.where(same, rng.uniform(0.6, 1.0, same.size), rng.uniform(-0.2, 0.2, same.size))
    odd = (fold == 3) & ~same
    scores[odd] = rng.uniform(0.45, 0.55, per)
    result = lfw.kfold_verification(scores, same, fold)
    expected = np.ones(folds)
    expected[3] = 0.5
    np.testing.assert_allclose(result.fold_accuracy, expected)
    assert result.accuracy_mean == pytest.approx(0.95)
    others = [t for k, t in enumerate(result.fold_threshold) if k != 3]
    assert result.fold_threshold[3] < 0.45 and all(0.55 < t < 0.6 for t in others)
    leaky, _ = lfw.best_threshold(scores, same)  # what a leaking protocol would use for fold 3: a perfect score
    assert lfw.accuracy(scores[fold == 3], same[fold == 3], leaky) == 1.0

    # TPR at FPR: separable scores except one impostor in fold 3 that outscores everyone.
    scores = np.where(same, rng.uniform(0.6, 1.0, same.size), rng.uniform(-0.2, 0.4, same.size))
    impostor = 3 * 2 * per + per  # the first mismatched pair of fold 3
    scores[impostor] = 1.5
    result = lfw.kfold_verification(scores, same, fold)
    expected = np.ones(folds)
    expected[3] = 1 - 1 / (2 * per)
    np.testing.assert_allclose(result.fold_accuracy, expected)
    assert result.accuracy_mean == pytest.approx(1 - 1 / (2 * per * folds))
    assert all(0.4 < t < 0.6 for t in result.fold_threshold)
    # Pooled: 1 false accept among 3000 impostors, above every genuine score -> TPR 1 at FPR 0.01, 0 at FPR 1e-4.
    assert result.tpr_pooled["0.01"] == 1.0 and result.tpr_pooled["0.001"] == 1.0
    assert lfw.tpr_at_fpr(scores, same, 1e-4) == 0.0
    # Per fold: fold 3 has 1 of 300 impostors on top: FPR 1/300 > 0.001 gives TPR 0 there.
    assert result.fold_tpr["0.001"][3] == 0.0 and result.tpr_fold_mean["0.001"] == pytest.approx(0.9)
    assert result.tpr_fold_mean["0.01"] == 1.0
    assert any("zero false accepts" in note for note in result.notes)


def test_pair_scores_pearson_and_cosine():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(6, 256)) + 3.0
    left, right = np.array([0, 1, 2]), np.array([3, 4, 5])
    pearson = lfw.pair_scores(feats, left, right, "pearson")
    np.testing.assert_allclose(pearson, [np.corrcoef(feats[a], feats[b])[0, 1] for a, b in zip(left, right)])
    cosine = lfw.pair_scores(feats, left, right, "cosine")
    assert (cosine > 0.85).all() and (np.abs(pearson) < 0.3).all()  # the offset dominates the cosine only


def test_cross_validation_folds_are_stratified():
    same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    fold = lfw.cross_validation_folds(same, 10)
    assert sorted(np.bincount(fold).tolist()) == [10] * 10
    assert all(same[fold == k].sum() == 5 for k in range(10))


def test_dev_view_threshold_from_train_pairs_or_cross_validation(tmp_path):
    from recognition.verify import AlignedImages, VerifySettings, run_protocol

    people = [f"P{i:02d}" for i in range(40)]
    names = [lfw.image_relpath(p, k) for p in people for k in (1, 2)]
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(len(people), 64))
    features = np.repeat(centres, 2, axis=0) + 0.3 * rng.normal(size=(len(names), 64))
    aligned = AlignedImages(names, np.zeros((len(names), 1, 1, 3), np.uint8), [None] * len(names))

    def pairs_file(name: str, persons: list[str]) -> lfw.Pairs:
        matched = [f"{p}\t1\t2" for p in persons]
        mismatched = [f"{a}\t1\t{b}\t2" for a, b in zip(persons, persons[1:] + persons[:1])]
        return lfw.read_pairs(_write_pairs(tmp_path / name, None, matched, mismatched))

    train, test = pairs_file("train.txt", people[:20]), pairs_file("test.txt", people[20:])
    settings = VerifySettings(view="dev")
    fixed, scores = run_protocol(features, aligned, test, train, settings)
    assert fixed.num_folds == 1 and fixed.threshold_source == "the training pairs file"
    assert fixed.accuracy_mean == lfw.accuracy(scores, test.same, fixed.fold_threshold[0]) > 0.9
    crossed, _ = run_protocol(features, aligned, test, None, settings)
    assert crossed.num_folds == 10 and "cross-validation" in crossed.threshold_source
    assert crossed.auc == fixed.auc and crossed.tpr_pooled == fixed.tpr_pooled


# --------------------------------------------------------------------------------------------------- data


def test_manifests_union_labels_and_kinds(real_shards, fake_manifest):
    table = read_training_table([real_shards, fake_manifest])
    assert (table["kind"] == REAL).sum() == 2 * NAMES and (table["kind"] == HALLUCINATED).sum() == 2 * NAMES
    assert "Ghost" not in set(table["identity"])  # status error rows are dropped
    assert table["label"].nunique() == NAMES
    assert table.groupby("identity")["label"].nunique().eq(1).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table.loc[table["kind"] == HALLUCINATED, "path"])


def test_pipeline_output_folder_and_crashed_parts(tmp_path, fake_manifest):
    from_folder = read_training_table([fake_manifest.parent])
    from_file = read_training_table([fake_manifest])
    pd.testing.assert_frame_equal(from_folder, from_file)
    # A crashed run: only manifest/part-*.parquet, one key written twice; paths stay relative to the run folder.
    run = tmp_path / "run"
    (run / "manifest").mkdir(parents=True)
    (run / "images").symlink_to(fake_manifest.parent / "images")
    rows = pq.read_table(fake_manifest)
    pq.write_table(rows.slice(0, 5), run / "manifest" / "part-00000.parquet")
    pq.write_table(rows.slice(3, 5), run / "manifest" / "part-00001.parquet")
    for spec in (run, run / "manifest", run / "manifest" / "part-00001.parquet"):
        table = read_training_table([spec])
        assert table["image_id"].is_unique and (table["kind"] == HALLUCINATED).all()
        assert all(Path(p).is_file() for p in table["path"])
    assert len(read_training_table([run])) == 8
    pq.write_table(rows.slice(0, 2), run / "manifest.parquet")  # a resumed run: merged file + newer parts
    assert len(read_training_table([run])) == 8


def test_manifest_errors(tmp_path, fake_manifest):
    pq.write_table(pa.table({"image_id": ["a"], "whatever": [1]}), tmp_path / "odd.parquet")
    with pytest.raises(ManifestError, match="neither"):
        read_training_table([tmp_path / "odd.parquet"])
    broken = pq.read_table(fake_manifest).to_pandas()
    broken.loc[0, "output_path"] = "images/gone.png"
    (tmp_path / "images").mkdir()
    broken.to_parquet(tmp_path / "broken.parquet")
    with pytest.raises(ManifestError, match="missing"):
        read_training_table([tmp_path / "broken.parquet"])
    with pytest.raises(ManifestError, match="does not exist"):
        read_training_table([tmp_path / "nope"])


def test_split_by_source_is_exact_and_deterministic():
    ids = [f"img{i // 3}" for i in range(300)]  # 100 sources x 3 rows
    val = split_by_source(ids, 0.1, seed=5)
    assert len({i for i, v in zip(ids, val) if v}) == 10
    np.testing.assert_array_equal(val, split_by_source(ids, 0.1, seed=5))
    assert not np.array_equal(val, split_by_source(ids, 0.1, seed=6))
    assert not split_by_source(ids, 0.0).any()


def test_validation_split_has_no_leakage(real_shards, fake_manifest):
    data = FaceData.load([real_shards, fake_manifest], val_fraction=0.3, seed=0)
    train, val = data.train_rows(), data.val_rows()
    val_ids = set(data.table.loc[data.is_val, "image_id"])
    assert len(val_ids) == 6
    assert not set(train["image_id"]) & val_ids  # neither the real crop nor any copy of a val image trains
    assert set(val["kind"]) == {REAL} and set(val["image_id"]) == val_ids  # validation measures real faces
    assert len(train) == 2 * (2 * NAMES - 6)
    summary = data.summary()
    assert summary["train_hallucinated"] == summary["train_real"] == 2 * NAMES - 6


# --------------------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbones_embed_and_classify(backbone):
    torch.manual_seed(0)
    net = RecognitionNet(NetConfig(backbone=backbone, image_size=112, num_classes=7)).eval()
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        embedding, logits = net(images, torch.tensor([1, 6]))
    assert embedding.shape == (2, 256) and logits.shape == (2, 7)
    assert torch.isfinite(embedding).all() and torch.isfinite(logits).all()
    torch.testing.assert_close(net(images), embedding)


def test_arcface_margin_lowers_only_the_target_logit():
    cos = torch.tensor([[0.8, 0.1, -0.3], [0.2, 0.5, 0.0]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(arcface_logits(cos, labels, 10.0, 0.0), 10.0 * cos)
    logits = arcface_logits(cos, labels, 10.0, 0.5)
    expected = 10.0 * torch.cos(torch.acos(torch.tensor([0.8, 0.5])) + 0.5)
    torch.testing.assert_close(logits[[0, 1], [0, 1]], expected)
    torch.testing.assert_close(logits[0, 1:], 10.0 * cos[0, 1:])


def test_checkpoint_round_trip(tmp_path):
    net = RecognitionNet(NetConfig(backbone="resnet18", head="arcface", num_classes=5))
    save_model(net, tmp_path / "ckpt", {"data": {"identities": 5}})
    loaded, config = load_model(tmp_path / "ckpt")
    assert config["architecture"]["head"] == "arcface" and config["data"] == {"identities": 5}
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), net.eval()(images))


def test_init_weights(tmp_path):
    from torchvision.models import resnet18

    from augmentor.identity.network import DlibResNet

    net = RecognitionNet(NetConfig(backbone="resnet18", num_classes=3))
    reference = resnet18(weights=None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "r18.pth")
    assert "resnet18 trunk" in load_init(net, str(tmp_path / "r18.pth"))
    torch.testing.assert_close(net.trunk.conv1.weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_init(net, str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="only exists for dlib-resnet"):
        load_init(net, "pretrained")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_init(net, str(tmp_path / "other.pth"))
    dlib_net = RecognitionNet(NetConfig(backbone="dlib-resnet", num_classes=3))
    load_init(dlib_net, "pretrained")
    torch.testing.assert_close(dlib_net.trunk.stem.conv.weight, DlibResNet.from_dat().stem.conv.weight)


def test_pretrained_embedding_starts_as_the_dlib_descriptor(real_shards):
    from augmentor.identity.network import DlibResNet
    from recognition.backbone import DLIB_CHIP_THETA
    from recognition.finetune import pretrained_parameters

    config = NetConfig(backbone="dlib-resnet", num_classes=3, embedding_dim=128, embedding="pretrained")
    net = RecognitionNet(config).eval()
    assert "embedding layer" in load_init(net, "pretrained")
    crops = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8)
    x = crops.float() / 255.0  # the same template chip the network cuts inside
    grid = torch.nn.functional.affine_grid(torch.tensor(DLIB_CHIP_THETA).expand(2, 2, 3), [2, 3, 150, 150], False)
    chips = torch.nn.functional.grid_sample(x, grid, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        torch.testing.assert_close(net(crops), DlibResNet.from_dat().eval()(chips), rtol=1e-4, atol=1e-5)
    # the embedding layer learns at the trunk's (pretrained) rate, the head at the full rate
    assert {id(p) for p in net.feat_extract.parameters()} <= {id(p) for p in pretrained_parameters(net)}
    cfg = _tiny_cfg(
        [real_shards],
        init="pretrained",
        **{
            "model.backbone": "dlib-resnet",
            "model.embedding_dim": 128,
            "model.embedding": "pretrained",
            "optim.trunk_lr_scale": 0.1,
        },
    )
    tuner = Finetuner(cfg, Path("unused"), progress=False)
    rest, trunk = tuner.optimizer.param_groups
    assert trunk["lr"] == pytest.approx(0.1 * rest["lr"])
    assert id(tuner.net.feat_extract[0].weight) in {id(p) for p in trunk["params"]}
    with pytest.raises(ValueError, match="embedding_dim 128"):
        RecognitionNet(dataclasses.replace(config, embedding_dim=256))
    with pytest.raises(ValueError, match="needs pretrained weights"):
        load_init(RecognitionNet(config), "none")


def test_frozen_trunk_gets_no_gradients_and_does_not_move(real_shards):
    cfg = _tiny_cfg([real_shards], init="pretrained", **{"model.backbone": "dlib-resnet", "optim.trunk_lr_scale": 0})
    tuner = Finetuner(cfg, Path("unused"), progress=False)
    before = {k: v.clone() for k, v in tuner.net.state_dict().items()}
    tuner.train_step(*next(iter(tuner._loader(tuner.train_set, 0))))
    after = tuner.net.state_dict()
    assert all(p.grad is None for p in tuner.net.trunk.parameters())
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("trunk."))
    assert not torch.equal(before["feat_extract.0.weight"], after["feat_extract.0.weight"])  # the new layer learns


def test_lr_schedules():
    assert lr_factor("poly", 0.96, 0, 100, 10) == 1.0
    assert lr_factor("poly", 0.96, 50, 100, 10) == pytest.approx(0.5**0.96)
    assert lr_factor("poly", 0.96, 100, 100, 10) == 0.0
    assert lr_factor("exp", 0.96, 25, 100, 10) == pytest.approx(0.96**2)
    assert lr_factor("constant", 0.96, 77, 100, 10) == 1.0


# --------------------------------------------------------------------------------------------------- training


def test_finetune_run_writes_a_loadable_checkpoint(tiny_run):
    assert {"finetune_config.json", "metrics.jsonl", "identities.json", "val_image_ids.txt"} <= {
        p.name for p in tiny_run.iterdir()
    }
    (record,) = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and record["step"] == 3 and np.isfinite(record["train"]["loss"])
    assert record["val"]["loss"] > 0 and 0 <= record["val"]["accuracy"] <= 1
    net, config = load_model(tiny_run / "checkpoint")
    assert net.config.backbone == "resnet18" and net.config.image_size == 112 and net.config.num_classes == NAMES
    assert config["data"]["hallucinated_images"] == config["data"]["real_images"] == 2 * NAMES
    assert config["epochs_trained"] == 1
    val_ids = set((tiny_run / "val_image_ids.txt").read_text().split())
    assert len(val_ids) == 4


def test_resume_is_exact(tmp_path, real_shards, fake_manifest):
    changes = {"optim.schedule": "exp", "optim.gamma": 0.5, "model.backbone": "dlib-resnet", "init": "pretrained"}
    cfg = _tiny_cfg([real_shards], epochs=2, batch_size=2, max_steps_per_epoch=1, **changes)
    straight = finetune(cfg, tmp_path / "straight", progress=False)
    finetune(dataclasses.replace(cfg, epochs=1), tmp_path / "split", progress=False)
    resumed = finetune(cfg, tmp_path / "split", resume=True, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines[1]["lr"] == pytest.approx(0.01 * 0.25)
    assert lines[1]["step"] == 2
    a, _ = load_model(tmp_path / "straight" / "last")
    b, _ = load_model(tmp_path / "split" / "last")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
    assert straight.name == resumed.name == "checkpoint"


def test_finetune_arcface_dlib_step_lowers_loss(real_shards):
    cfg = _tiny_cfg([real_shards], init="pretrained", **{"model.backbone": "dlib-resnet", "model.head": "arcface"})
    tuner = Finetuner(cfg, Path("unused"), progress=False)
    images, labels = next(iter(tuner._loader(tuner.train_set, 0)))
    first = tuner.train_step(images, labels)["loss"]
    for _ in range(2):
        last = tuner.train_step(images, labels)["loss"]
    assert float(last) < float(first)


@pytest.mark.slow  # a Ray Train cluster of two workers
@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own deprecated settings
def test_ray_train_two_cpu_workers(tmp_path, real_shards, fake_manifest):
    import ray

    from recognition.distributed import finetune_distributed

    cfg = _tiny_cfg([real_shards, fake_manifest], batch_size=2, max_steps_per_epoch=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        checkpoint = finetune_distributed(cfg, tmp_path / "ray-run", num_workers=2, progress=False)
    finally:
        ray.shutdown()
    net, config = load_model(checkpoint)
    assert config["world_size"] == 2 and config["steps"] == 2 and net.config.num_classes == NAMES
    (record,) = [json.loads(x) for x in (tmp_path / "ray-run" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(record["val_loss"]) and record["images_per_second"] > 0


# --------------------------------------------------------------------------------------------------- verify + CLI


def _synthetic_pairs(tmp_path: Path, root: Path) -> Path:
    people = _people(root)
    matched = [f"{n}\t1\t2" for n in people]
    mismatched = [f"{people[i]}\t1\t{people[(i + 3) % len(people)]}\t2" for i in range(len(people) - 1)]
    mismatched.append(f"{people[0]}\t2\tNo_Face\t1")
    return _write_pairs(tmp_path / "pairs.txt", 2, matched, mismatched)


def test_verify_lfw_and_compare(tmp_path, tiny_run, lfw_root):
    pairs = _synthetic_pairs(tmp_path, lfw_root)
    out = tmp_path / "verify"
    args = ["verify-lfw", "--model", f"tuned={tiny_run}", "--model", "dlib", "--root", str(lfw_root)]
    args += ["--pairs", str(pairs), "--out", str(out), "--workers", "1", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "1 centre-cropped" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["num_pairs"] == 20 and report["alignment"]["fallback_images"].keys() == {"No_Face/No_Face_0001.jpg"}
    assert set(report["models"]) == {"tuned", "dlib-resnet (fixed)"}
    dlib = report["models"]["dlib-resnet (fixed)"]
    assert dlib["feature_dim"] == 128 and report["models"]["tuned"]["feature_dim"] == 256
    assert dlib["auc"] > 0.9 and dlib["accuracy_mean"] >= 0.8  # a face-trained extractor separates these pairs
    assert len(dlib["fold_accuracy"]) == 2 and report["models"]["tuned"]["training"]["data"]["identities"] == NAMES
    assert (out / "roc.png").stat().st_size > 1000
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "features").iterdir()}
    assert CliRunner().invoke(main, args).exit_code == 0  # second run: cached crops and features
    assert {p: p.stat().st_mtime_ns for p in (out / "features").iterdir()} == mtimes

    compared = CliRunner().invoke(main, ["compare", str(out), "--json", str(tmp_path / "cmp.json")])
    assert compared.exit_code == 0, compared.output
    assert "| tuned | 20 | 10 | 20 |" in compared.output and "dlib-resnet (fixed) vs tuned" in compared.output
    assert "only 2 folds" in compared.output
    tests = json.loads((tmp_path / "cmp.json").read_text())
    assert tests["dlib-resnet (fixed)"]["accuracy"]["folds"] == 2


def _report(path: Path, name: str, fold_accuracy: list[float], real: int, fake: int) -> Path:
    entry = {
        "fold_accuracy": fold_accuracy,
        "accuracy_mean": float(np.mean(fold_accuracy)),
        "accuracy_std": float(np.std(fold_accuracy)),
        "tpr_pooled": {"0.01": 0.96},
        "tpr_fold_mean": {"0.01": 0.95},
        "tpr_fold_std": {"0.01": 0.01},
        "fold_tpr": {"0.01": [0.95 + 0.001 * i for i in range(len(fold_accuracy))]},
        "num_folds": len(fold_accuracy),
        "training": {"data": {"real_images": real, "identities": 10575, "hallucinated_images": fake}},
    }
    path.mkdir()
    (path / "report.json").write_text(json.dumps({"pairs": "pairs.txt", "num_pairs": 6000, "models": {name: entry}}))
    return path


def test_compare_verdicts(tmp_path):
    base = [0.95, 0.96, 0.955, 0.95, 0.96, 0.945, 0.955, 0.96, 0.95, 0.955]
    a = _report(tmp_path / "a", "real", base, 494414, 0)
    better = _report(tmp_path / "b", "aug", [x + 0.01 + 0.001 * (i % 3) for i, x in enumerate(base)], 494414, 494414)
    noisy = _report(tmp_path / "c", "noise", [x + (0.004 if i % 2 else -0.004) for i, x in enumerate(base)], 1, 1)
    result = CliRunner().invoke(main, ["compare", f"A={a}", f"B={better}", f"C={noisy}"])
    assert result.exit_code == 0, result.output
    assert "| A | 494,414 | 10,575 | 0 | 0.9600 | 0.9500 ± 0.0100 |" in result.output
    lines = result.output.splitlines()
    b_line = lines[lines.index("**B vs A** (paired by fold, B minus A):") + 2]
    assert b_line.startswith("- accuracy: +0.0109 ± 0.0009 over 10 folds")
    assert "better, beyond the fold-to-fold noise" in b_line and "10 up / 0 down" in b_line
    c_line = lines[lines.index("**C vs A** (paired by fold, C minus A):") + 2]
    assert "within the fold-to-fold noise" in c_line and "5 up / 5 down" in c_line
    single = CliRunner().invoke(main, ["compare", str(a)])
    assert single.exit_code != 0 and "at least two" in single.output


def test_cli_errors(tmp_path, real_shards, lfw_root):
    runner = CliRunner()
    result = runner.invoke(
        main, ["finetune", "--manifest", str(real_shards), "--init", str(tmp_path / "r50.pth"), "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "no such weights file" in result.output
    result = runner.invoke(main, ["finetune", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--manifest" in result.output
    result = runner.invoke(main, ["finetune", "--manifest", str(real_shards), "--set", "bogus=1", "-n"])
    assert result.exit_code != 0 and "unknown key" in result.output
    result = runner.invoke(main, ["finetune", "--resume", str(tmp_path), "--epochs", "3"])
    assert result.exit_code != 0 and "give no other settings" in result.output
    result = runner.invoke(main, ["finetune", "--resume", str(tmp_path)])
    assert result.exit_code != 0 and "not a finetune run folder" in result.output
    common = ["verify-lfw", "--model", "dlib", "--root", str(lfw_root), "--out", str(tmp_path / "v")]
    result = runner.invoke(main, [*common, "--pairs", str(tmp_path / "missing.txt")])
    assert result.exit_code != 0 and "does not exist" in result.output
    pairs = _write_pairs(tmp_path / "p.txt", 2, ["Nobody\t1\t2"] * 2, ["Nobody\t1\tNoone\t1"] * 2)
    result = runner.invoke(main, [*common, "--pairs", str(pairs)])
    assert result.exit_code != 0 and "not under" in result.output and "Nobody/Nobody_0001.jpg" in result.output
    result = runner.invoke(main, [*common, "--pairs", str(pairs), "--view", "dev"])
    assert result.exit_code != 0 and "View 2 file" in result.output


def test_finetune_dry_run_and_help(real_shards, fake_manifest, tmp_path):
    from recognition import cli

    assert cli.BACKBONES == BACKBONES
    result = CliRunner().invoke(
        main,
        ["finetune", "--manifest", str(real_shards), "--manifest", str(fake_manifest), "--lr", "1e-5", "-n"],
    )
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.output)
    assert resolved["optim"]["lr"] == 1e-5 and resolved["counts"]["real_images"] == 2 * NAMES
    assert resolved["launch"]["ray"] is False and len(resolved["manifests"]) == 2
    for command in ("finetune", "verify-lfw", "compare"):
        shown = CliRunner().invoke(main, [command, "--help"])
        assert shown.exit_code == 0 and "Examples" in shown.output

"""augmentor run --method donor: the donor stage on a plain dict, and the Ray pipeline end to end, resumed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.donors import DonorBank
from augmentor.donors.bank import BANK_DIR, BANK_FILE, FEATURES_FILE
from augmentor.manifest import MANIFEST_FILE, MANIFEST_SCHEMA, read_manifest
from augmentor.preprocessing.shards import decode_png
from pipelines.donor import DonorPredictAndWrite, DonorPredictor
from pipelines.stages import MaskStage, write_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def _person(path) -> str:
    return path.stem.rsplit("_", 1)[0]


@pytest.fixture(scope="module")
def donor_folder(tmp_path_factory, lfw_images):
    """The 10 fixture faces preprocessed as donors, labelled with their LFW person names."""
    from augmentor.preprocessing.preprocess import preprocess

    out = tmp_path_factory.mktemp("donors")
    listing = pd.DataFrame(
        {
            "image_id": [f"{_person(p)}/{p.stem}" for p in lfw_images],
            "identity": [_person(p) for p in lfw_images],
            "path": [str(p) for p in lfw_images],
        }
    )
    preprocess(listing, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def masked_batch(lfw_images, tmp_path_factory):
    bad = tmp_path_factory.mktemp("bad") / "broken.jpg"
    bad.write_bytes(b"not an image")
    batch = {
        "image_id": np.asarray(["a/1", "b/1", "c/1"], dtype=object),
        "identity": np.asarray([_person(lfw_images[0]), "b", ""], dtype=object),
        "label": np.asarray([0, 1, 2], np.int32),
        "path": np.asarray([str(lfw_images[0]), str(bad), str(lfw_images[1])], dtype=object),
        "out_stem": np.asarray(["a/1", "b/1", "c/1"], dtype=object),
        "todo": np.asarray([0b111, 0b111, 0b010], np.int64),
    }
    return MaskStage()(batch)


def test_donor_stage_on_a_plain_dict(donor_folder, masked_batch, lfw_images, tmp_path):
    assert masked_batch["landmarks"].shape == (3, 68, 2) and masked_batch["landmarks"][0].any()
    stage = DonorPredictor(str(donor_folder), copies=3, device="cpu", batch_size=2, precision="fp32")
    out = stage(masked_batch)
    assert out["image_id"].tolist() == ["a/1"] * 3 + ["b/1"] * 3 + ["c/1"]
    assert out["copy"].tolist() == [0, 1, 2, 0, 1, 2, 1]
    face = masked_batch["mask"][0].astype(bool)
    own = f"{_person(lfw_images[0])}/{lfw_images[0].stem}"
    for k in range(3):
        np.testing.assert_array_equal(out["image"][k][face], masked_batch["aligned"][0][face])
        assert out["donor_identity"][k] != masked_batch["identity"][0] and out["donor_image_id"][k] != own
    assert len(set(out["donor_image_id"][:3])) == 3
    assert not np.array_equal(out["image"][0][~face], out["image"][1][~face])
    assert np.isnan(out["match_score"][3:6]).all() and not out["image"][3:6].any()
    scores = out["match_score"][[0, 1, 2, 6]]
    assert np.all((scores > 0) & (scores <= 1))
    # c/1 has an unknown identity: its copy 1 is its second-nearest donor, the first being its own photo.
    bank = DonorBank.load(donor_folder)
    c = masked_batch
    indices, _ = bank.search(c["aligned"][2:], c["mask"][2:], c["landmarks"][2:], [""], k=2)
    assert bank.image_ids[indices[0, 0]] == f"{_person(lfw_images[1])}/{lfw_images[1].stem}"
    assert out["donor_image_id"][6] == bank.image_ids[indices[0, 1]]

    write_batch(out, str(tmp_path / "plain"), "png", bank.id)
    manifest = read_manifest(tmp_path / "plain").to_pandas()
    assert manifest["donor_image_id"].isna().tolist() == [False] * 3 + [True] * 3 + [False]
    assert manifest["donor_identity"].isna().sum() == 3 and manifest["seed"].eq(0).all()
    fused = DonorPredictAndWrite(
        out_dir=str(tmp_path / "fused"), image_format="png", model_id=bank.id,
        donors=str(donor_folder / BANK_DIR), copies=3, device="cpu", batch_size=2, precision="fp32",
    )  # fmt: skip
    fused(masked_batch)
    again = read_manifest(tmp_path / "fused").to_pandas()
    pd.testing.assert_frame_equal(again.drop(columns="match_score"), manifest.drop(columns="match_score"))
    assert (tmp_path / "fused/images/a/1_hal2.png").read_bytes() == (
        tmp_path / "plain/images/a/1_hal2.png"
    ).read_bytes()


def test_cascade_rows_have_null_donor_columns(tmp_path):
    batch = {
        "image_id": np.asarray(["x/1"], dtype=object),
        "identity": np.asarray(["x"], dtype=object),
        "label": np.asarray([0], np.int32),
        "copy": np.asarray([0], np.int32),
        "path": np.asarray(["x/1.jpg"], dtype=object),
        "out_stem": np.asarray(["x/1"], dtype=object),
        "status": np.asarray(["ok"], dtype=object),
        "reason": np.asarray([""], dtype=object),
        "seed": np.asarray([7], np.int64),
        "mask_area": np.asarray([0.2], np.float32),
        "match_score": np.asarray([0.9], np.float32),
        "image": np.zeros((1, 128, 128, 3), np.uint8),
        "mask_s": np.zeros(1),
        "hallucinate_s": np.zeros(1),
    }
    write_batch(batch, str(tmp_path), "png", "0" * 16)
    row = read_manifest(tmp_path).to_pandas().iloc[0]
    assert pd.isna(row["donor_image_id"]) and pd.isna(row["donor_identity"])


def test_cli_checks_the_method_options(tmp_path, donor_folder):
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--method", "donor", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "--donors" in result.output
    result = runner.invoke(main, ["run", "--donors", str(donor_folder), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "--method donor" in result.output
    result = runner.invoke(main, ["run", "--method", "donor", "--donors", str(tmp_path), "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "neither" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["run", "--method", "donor", "--donors", str(donor_folder), "--copies", "3",
                                  "--out", str(tmp_path / "d"), "-n"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "donor" and report["model_id"] == DonorBank.identify(donor_folder)
    assert report["plan"]["predictor_gpus"] == 0.0 and report["rows_total"] == 24 * 3
    result = runner.invoke(main, ["run", "--method", "donor", "--donors", str(donor_folder), "--no-refine",
                                  "--out", str(tmp_path / "e"), "-n"])  # fmt: skip
    assert result.exit_code == 0, result.output
    plain = json.loads(result.output)  # the plain composition is another model: its rows never mix with refined ones
    assert plain["model_id"] == DonorBank.identify(donor_folder) + "-plain"


def test_donor_stage_refine_switch(donor_folder, masked_batch):
    """--refine (default) and --no-refine put the same donors' context around the same face, composed two ways."""
    refined = DonorPredictor(str(donor_folder), copies=1, device="cpu", batch_size=2, precision="fp32")(masked_batch)
    plain = DonorPredictor(
        str(donor_folder), copies=1, device="cpu", batch_size=2, precision="fp32", refine=False
    )(masked_batch)
    face = masked_batch["mask"][0].astype(bool)
    assert refined["donor_image_id"][0] == plain["donor_image_id"][0]
    np.testing.assert_array_equal(refined["image"][0][face], plain["image"][0][face])
    assert not np.array_equal(refined["image"][0][~face], plain["image"][0][~face])


@pytest.fixture(scope="module")
def lfw_tree(tmp_path_factory, lfw_images):
    """An LFW layout of 4 fixture people (so their own photos are in the donor folder) and a faceless image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("lfw")
    for path in lfw_images[:4]:
        (root / _person(path)).mkdir()
        (root / _person(path) / path.name).write_bytes(path.read_bytes())
    (root / "Nobody").mkdir()
    Image.new("RGB", (160, 160), (90, 120, 150)).save(root / "Nobody" / "Nobody_0001.jpg")
    return root


@pytest.mark.ray
def test_end_to_end_and_resume(donor_folder, lfw_tree, tmp_path, masker):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        args = ["run", "--no-progress", "--dataset", "lfw", "--root", str(lfw_tree), "--method", "donor",
                "--donors", str(donor_folder), "--copies", "2", "--workers", "1", "--batch-size", "2",
                "--out", str(out)]  # fmt: skip
        first = CliRunner().invoke(main, [*args, "--limit", "2"])  # a partial run, then the rest
        assert first.exit_code == 0, first.output
        stamp = (donor_folder / BANK_DIR / FEATURES_FILE).stat().st_mtime_ns
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "8 ok, 2 no face" in result.output and "(4 already done, 6 made" in result.output
        assert (donor_folder / BANK_DIR / FEATURES_FILE).stat().st_mtime_ns == stamp  # built once, then reused

        table = pq.read_table(out / MANIFEST_FILE)
        assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
        frame = table.to_pandas()
        assert len(frame) == 10 and not frame.duplicated(["image_id", "copy"]).any()
        ok = frame[frame["status"] == "ok"]
        failed = frame[frame["status"] != "ok"]
        assert ok["donor_image_id"].notna().all() and failed["donor_image_id"].isna().all()
        assert (ok["donor_identity"] != ok["identity"]).all()  # their own photos are in the bank, never used
        assert ok.groupby("image_id")["donor_image_id"].nunique().eq(2).all()
        bank_id = json.loads((donor_folder / BANK_DIR / BANK_FILE).read_text())["id"]
        assert ok["model_id"].eq(bank_id).all() and ok["match_score"].between(0, 1).all()
        for _, row in ok.iterrows():
            image = decode_png((out / row["output_path"]).read_bytes())
            face = masker(row["source_path"])
            inside = face.mask.astype(bool)
            np.testing.assert_array_equal(image[inside], face.aligned[inside])
        assert decode_png((out / "preview.png").read_bytes()).shape == (4 * 128, 4 * 128, 3)

        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0 and "10 already done, 0 made" in again.output
        other = CliRunner().invoke(main, ["run", "--no-progress", "--dataset", "lfw", "--root", str(lfw_tree),
                                          "--out", str(out)])  # fmt: skip
        assert other.exit_code == 1 and "other settings" in other.output and "model_id" in other.output
    finally:
        ray.shutdown()

"""augmentor preprocess: shard contents, resume after a kill, settings checks and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.faces import MaskingConfig, Template
from augmentor.options import DATASET_NAMES
from augmentor.preprocessing.preprocess import preprocess
from augmentor.preprocessing.shards import SHARD_SCHEMA, decode_mask, decode_png, read_shards, shard_paths


def _listing(paths: list[Path], extra: bool = False) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "image_id": [p.stem for p in paths],
            "identity": [p.stem.rsplit("_", 1)[0] for p in paths],
            "path": [str(p) for p in paths],
        }
    )
    if extra:
        df["padded_fraction"] = np.linspace(0, 0.2, len(df))
    return df


@pytest.fixture
def listing(lfw_images, tmp_path) -> pd.DataFrame:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(lfw_images[0].read_bytes()[:3000])
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (160, 160), (90, 120, 150)).save(blank)
    return _listing(list(lfw_images[:4]) + [bad, blank], extra=True)


def test_shards_hold_masked_faces(listing, tmp_path, masker):
    out = tmp_path / "out"
    summary = preprocess(listing, out, workers=1, shard_size=4, progress=False)
    assert summary.total == summary.processed == len(listing) and summary.skipped == 0
    assert summary.status_counts == {"ok": 4, "error": 1, "no_face": 1}
    assert summary.reason_counts == {"truncated": 1, "no_face": 1}
    assert len(shard_paths(out)) == 2  # 4 + 2 rows
    table = read_shards(out)
    assert table.schema.names[: len(SHARD_SCHEMA)] == SHARD_SCHEMA.names
    assert table.schema.field("padded_fraction").type == "double"
    rows = table.to_pandas().set_index("image_id")
    for path in listing["path"][:4]:
        row = rows.loc[Path(path).stem]
        expected = masker(path)
        assert row["status"] == "ok" and row["reason"] == ""
        assert np.array_equal(decode_png(row["aligned"]), expected.aligned)
        assert np.array_equal(decode_mask(row["mask"]), expected.mask)
        np.testing.assert_allclose(np.asarray(row["landmarks"]).reshape(68, 2), expected.landmarks)
        assert row["mask_area"] == pytest.approx(expected.mask.mean())
    assert rows.loc["broken", "status"] == "error" and rows.loc["broken", "reason"].startswith("truncated")
    assert rows.loc["blank", "aligned"] is None
    ok_only = read_shards(out, columns=["image_id"], status="ok")
    assert ok_only.column_names == ["image_id"] and ok_only.num_rows == 4
    saved = json.loads((out / "summary.json").read_text())
    assert saved["status_counts"]["ok"] == 4


def test_parallel_workers_match_single_process(listing, tmp_path):
    one = preprocess(listing, tmp_path / "one", workers=1, progress=False)
    two = preprocess(listing, tmp_path / "two", workers=2, batch_size=2, progress=False)
    assert one.status_counts == two.status_counts
    a = read_shards(tmp_path / "one").to_pandas().set_index("image_id").sort_index()
    b = read_shards(tmp_path / "two").to_pandas().set_index("image_id").sort_index()
    assert list(a.index) == list(b.index)
    assert (a["aligned"].fillna(b"") == b["aligned"].fillna(b"")).all()


def test_resume_skips_done_rows_and_cleans_temp_files(listing, tmp_path):
    out = tmp_path / "out"
    preprocess(listing.head(3), out, workers=1, shard_size=2, progress=False)
    (out / ".part-00099.parquet.tmp").write_bytes(b"half-written")
    summary = preprocess(listing, out, workers=1, shard_size=2, progress=False)
    assert summary.skipped == 3 and summary.processed == 3 and summary.total == 6
    ids = read_shards(out, columns=["image_id"])["image_id"].to_pylist()
    assert sorted(ids) == sorted(listing["image_id"])
    assert not list(out.glob(".*.tmp"))
    again = preprocess(listing, out, workers=1, progress=False)
    assert again.processed == 0 and again.total == 6


@pytest.mark.slow  # kill test
def test_resume_after_sigkill(lfw_images, tmp_path):
    """Kill -9 a running preprocess, rerun it, and get every image exactly once."""
    paths = [lfw_images[i % len(lfw_images)] for i in range(40)]
    listing = _listing(paths)
    listing["image_id"] = [f"img{i:03d}" for i in range(len(listing))]
    listing_path = tmp_path / "listing.parquet"
    listing.to_parquet(listing_path)
    out = tmp_path / "out"
    script = (
        "import pandas as pd, time; from augmentor.preprocessing.preprocess import preprocess; "
        f"preprocess(pd.read_parquet({str(listing_path)!r}), {str(out)!r}, workers=1, shard_size=2, batch_size=1, "
        "progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while len(shard_paths(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(shard_paths(out))
    assert 2 <= written < 20, "the kill should land mid-run"
    summary = preprocess(listing, out, workers=1, shard_size=2, progress=False)
    assert summary.skipped == 2 * written
    ids = read_shards(out, columns=["image_id"])["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) == len(listing)
    for path in shard_paths(out):
        pq.read_table(path)  # every shard is complete and readable


def test_rejects_changed_settings_and_bad_listings(listing, tmp_path):
    out = tmp_path / "out"
    preprocess(listing.head(1), out, workers=1, progress=False)
    other = MaskingConfig(template=Template(128, (50.0, 56.0), (78.0, 56.0)))
    with pytest.raises(ValueError, match="other masking settings"):
        preprocess(listing, out, masking=other, workers=1, progress=False)
    with pytest.raises(ValueError, match="unique"):
        preprocess(pd.concat([listing, listing]), tmp_path / "dup", workers=1, progress=False)
    with pytest.raises(ValueError, match="lacks column"):
        preprocess(listing.drop(columns=["identity"]), tmp_path / "col", workers=1, progress=False)


def test_cli_dataset_names_match_registry():
    from augmentor.datasets.adapters import list_datasets

    assert sorted(DATASET_NAMES) == list_datasets()


def test_cli_preprocess_samples(tmp_path):
    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(main, ["preprocess", "--out", str(out), "--limit", "3", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "3 images" in result.output and "3 ok" in result.output
    assert (out / "preview.png").is_file()
    from PIL import Image

    assert Image.open(out / "preview.png").size == (3 * 128, 256)


def test_cli_preprocess_lfw_tree_and_errors(lfw_images, tmp_path):
    root = tmp_path / "lfw"
    for path in lfw_images[:2]:
        (root / path.stem.rsplit("_", 1)[0]).mkdir(parents=True)
        (root / path.stem.rsplit("_", 1)[0] / path.name).write_bytes(path.read_bytes())
    runner = CliRunner()
    dry = runner.invoke(
        main, ["preprocess", "--dataset", "lfw", "--root", str(root), "--out", str(tmp_path / "o"), "-n"]
    )
    assert dry.exit_code == 0 and json.loads(dry.output)["images"] == 2
    assert not (tmp_path / "o").exists()
    ok = runner.invoke(
        main,
        [
            "preprocess",
            "--dataset",
            "lfw",
            "--root",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
            "--no-progress",
        ],
    )
    assert ok.exit_code == 0 and "2 ok" in ok.output, ok.output
    no_root = runner.invoke(main, ["preprocess", "--dataset", "lfw", "--out", str(tmp_path / "x")])
    assert no_root.exit_code == 2 and "needs --root" in no_root.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = runner.invoke(
        main, ["preprocess", "--dataset", "folder", "--root", str(empty), "--out", str(tmp_path / "y")]
    )
    assert no_images.exit_code == 1 and "no images" in no_images.output and "Traceback" not in no_images.output
    bad_set = runner.invoke(main, ["preprocess", "--out", str(tmp_path / "z"), "--set", "detektor=hog"])
    assert bad_set.exit_code == 1 and "unknown key" in bad_set.output

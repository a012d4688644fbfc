"""The GPU pack: faces in WebP/JPEG plus fp16 identity weights, training from it with no cv2/dlib, the time budget,
and scripts/gpu/train.sh run end to end on the CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from augmentor.cli import main
from augmentor.identity.network import DlibResNet
from augmentor.preprocessing.shards import decode_png, read_shards
from augmentor.resources import MissingModelFileError
from augmentor.training.checkpoints import load_generator
from augmentor.training.data import DataConfig, load_faces
from augmentor.training.loop import Trainer
from augmentor.training.losses import CascadeLoss, FaceFeatures, LossConfig
from augmentor.training.pack import PackConfig, build_pack

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "train" / "tiny.yaml"
# What the GPU machines lack; a subprocess with `blocked_env` cannot import any of them.
BLOCKED = ("cv2", "dlib", "face_recognition_models", "lpips", "torchmetrics", "ray", "sklearn", "scipy", "piq")


@pytest.fixture(scope="module")
def pack_dir(face_shards, tmp_path_factory) -> Path:
    """The fixture faces packed through the CLI, WebP q95."""
    out = tmp_path_factory.mktemp("pack") / "pack"
    result = CliRunner().invoke(main, ["pack", "--data", str(face_shards), "--out", str(out), "--quality", "95"])
    assert result.exit_code == 0, result.output
    assert "10 faces (0 left out)" in result.output
    return out


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory) -> dict[str, str]:
    """Environment of a subprocess in which the modules of BLOCKED cannot be imported."""
    site = tmp_path_factory.mktemp("blocked")
    (site / "sitecustomize.py").write_text(f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    probe = subprocess.run([sys.executable, "-c", "import cv2"], check=False, env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "import of cv2 halted" in probe.stderr  # the block works
    return env


def test_pack_matches_the_shards(face_shards, pack_dir):
    original = load_faces(DataConfig(path=str(face_shards)))
    for path in (pack_dir, pack_dir / "faces.parquet"):
        packed = load_faces(DataConfig(path=str(path)))
        assert packed.image_ids == original.image_ids and packed.identities == original.identities
        assert packed.fingerprint == original.fingerprint
        assert torch.equal(packed.masks, original.masks)
        error = (packed.images.float() - original.images.float()).abs()
        assert 0 < error.mean() < 3.0  # lossy, but by less than 3 grey levels at q95
    summary = json.loads((pack_dir / "pack.json").read_text())
    assert summary["rows"] == 10 and summary["mean_abs_error"] == pytest.approx(float(error.mean()), abs=0.05)
    assert summary["config"]["image_format"] == "webp" and summary["fingerprint"] == original.fingerprint
    faces = pq.read_table(pack_dir / "faces.parquet")
    assert set(faces.column_names) == {"image_id", "identity", "border_fraction", "mask_area", "aligned", "mask", "valid"}
    assert all(b[:4] == b"RIFF" and b[8:12] == b"WEBP" for b in faces["aligned"].to_pylist())
    shards = read_shards(face_shards, status="ok")
    assert sum(map(len, faces["aligned"].to_pylist())) < 0.4 * sum(map(len, shards["aligned"].to_pylist()))


def test_pack_cli_defaults_and_errors(tmp_path):
    result = CliRunner().invoke(main, ["pack", "--data", str(tmp_path), "-n"])
    assert result.exit_code == 0 and json.loads(result.output)["image_format"] == "webp"
    assert json.loads(result.output)["quality"] == 92 and json.loads(result.output)["out"] == "pack"
    result = CliRunner().invoke(main, ["pack", "--data", str(tmp_path), "--out", str(tmp_path / "pack")])
    assert result.exit_code == 1 and "no part-*.parquet shards" in result.output
    assert CliRunner().invoke(main, ["pack", "--data", str(tmp_path), "--quality", "80"]).exit_code == 2


def test_decoding_without_cv2(pack_dir, face_shards, monkeypatch):
    packed = pq.read_table(pack_dir / "faces.parquet").slice(0, 3)
    png = read_shards(face_shards, status="ok").slice(0, 3)["aligned"].to_pylist()
    with_cv2 = [decode_png(b) for b in packed["aligned"].to_pylist() + png]
    monkeypatch.setitem(sys.modules, "cv2", None)
    without = [decode_png(b) for b in packed["aligned"].to_pylist() + png]
    for a, b in zip(with_cv2, without, strict=True):
        assert a.shape == b.shape == (128, 128, 3)
        assert np.abs(a.astype(int) - b).max() <= 2  # the same libwebp; PNG is lossless: identical
    assert all(np.array_equal(a, b) for a, b in zip(with_cv2[3:], without[3:], strict=True))
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_png(b"not an image")


def test_jpeg_and_padded_fraction_filter(face_shards, tmp_path):
    table = read_shards(face_shards)
    padded = [0.0, 0.3, None, 0.05, 0.5, 0.0, 0.0, 0.2, 0.0, 0.0][: table.num_rows]
    source = tmp_path / "shards"
    source.mkdir()
    pq.write_table(table.append_column("padded_fraction", [padded]), source / "part-00000.parquet")
    summary = build_pack(
        source, tmp_path / "pack", PackConfig(image_format="jpeg", quality=95, max_padded_fraction=0.1)
    )
    kept = [i for i, p in enumerate(padded) if (p or 0.0) <= 0.1 and table["status"][i].as_py() == "ok"]
    assert summary.rows == len(kept) and summary.dropped == 10 - len(kept) and summary.mean_abs_error < 3
    faces = pq.read_table(tmp_path / "pack" / "faces.parquet")
    assert faces["image_id"].to_pylist() == [table["image_id"][i].as_py() for i in kept]
    assert all(b[:2] == b"\xff\xd8" for b in faces["aligned"].to_pylist())  # JPEG
    assert load_faces(DataConfig(path=str(tmp_path / "pack"))).images.shape == (len(kept), 3, 128, 128)
    with pytest.raises(ValueError, match="quality"):
        build_pack(source, tmp_path / "bad", PackConfig(quality=50))


def test_identity_weights_from_the_pack(pack_dir, tmp_path):
    weights = pack_dir / "identity.safetensors"
    stored = load_file(str(weights))
    assert stored["fc.weight"].dtype == torch.float16 and stored["input_mean"].dtype == torch.float32
    assert weights.stat().st_size < 12 * 2**20
    net, reference = DlibResNet.from_file(weights).eval(), DlibResNet.from_dat().eval()
    assert all(p.dtype == torch.float32 for p in net.parameters())
    faces = load_faces(DataConfig(path=str(pack_dir)))
    chips = torch.nn.functional.interpolate(faces.images[:4].float() / 255, size=(150, 150), mode="bilinear")
    with torch.no_grad():
        a, b = net(chips), reference(chips)
    assert (a - b).norm(dim=1).max() < 0.01  # dlib's same-person threshold is 0.6
    loss = CascadeLoss(LossConfig(identity_weights=str(weights), perceptual=1.0, identity=1.0))
    assert isinstance(loss.face, FaceFeatures)
    torch.testing.assert_close(loss.face.net.fc.weight, stored["fc.weight"].float())
    with pytest.raises(MissingModelFileError):
        DlibResNet.from_file(tmp_path / "missing.safetensors")
    (tmp_path / "other.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="does not hold the dlib face ResNet"):
        DlibResNet.from_file(tmp_path / "other.safetensors")


def test_time_budget_ends_the_run_after_its_epoch(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, epochs=3, batch_size=2, max_minutes=0.0)
    checkpoint = Trainer(cfg, tmp_path).fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["epoch_steps"] == 1 and lines[0]["out_of_time"] is True
    assert lines[0]["step"] == 1 and lines[0]["train"]["g_total"] > 0
    assert (checkpoint / "model.safetensors").is_file() and (tmp_path / "resume" / "state.pt").is_file()
    assert (tmp_path / "samples" / "epoch_0001.png").is_file()


def test_training_needs_no_cv2_or_dlib(pack_dir, blocked_env, tmp_path):
    command = [
        sys.executable, "-m", "augmentor.cli", "train", "--data", str(pack_dir), "--config", str(TINY),
        "--set", f"loss.identity_weights={pack_dir / 'identity.safetensors'}", "--set", "loss.identity=1",
        "--set", "loss.perceptual=1", "--set", "loss.identity_from=128", "--set", "loss.perceptual_from=128",
        "--set", "max_steps_per_epoch=2", "--epochs", "1", "--device", "cpu",
        "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(
        command, check=False, env=blocked_env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = tmp_path.glob("00000-*")
    (line,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert line["step"] == 1 and line["train"]["id_128"] > 0 and line["train"]["perc_128"] > 0
    assert (run / "checkpoint" / "model.safetensors").is_file()


def test_gpu_script_on_the_cpu(pack_dir, blocked_env, tmp_path):
    out = tmp_path / "out"
    env = {
        **blocked_env,
        "OUT": str(out),
        "AUGMENTOR_DEVICE": "cpu",
        "AUGMENTOR_PACK": str(pack_dir),
        "AUGMENTOR_RUNS": str(tmp_path / "runs"),
        "PYTHON": sys.executable,
    }
    command = ["bash", str(ROOT / "scripts" / "gpu" / "train.sh"), "--config", str(TINY), "--minutes", "0.05"]
    result = subprocess.run(command, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {str(p.relative_to(out)) for p in files}
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert all(v.dtype == torch.bfloat16 for v in load_file(str(out / "generator" / "model.safetensors")).values())
    generator, config = load_generator(out / "generator")
    assert config["stored_dtype"] == "bfloat16" and config["epochs_trained"] >= 1
    epochs = len((out / "metrics.jsonl").read_text().splitlines())
    expected = {"train.log", "metrics.jsonl", "loss_curves.png", f"epoch_{epochs:04d}.png", "resume.tar"}
    assert expected | {"generator/config.json", "generator/model.safetensors"} == names
    assert all(p.dtype == torch.float32 for p in generator.parameters())
    log = (out / "train.log").read_text()
    assert "cuda available: False" in log and "collecting" in log
    with tarfile.open(out / "resume.tar") as tar:
        members = set(tar.getnames())
    (run,) = {m.split("/")[0] for m in members}
    assert {f"{run}/train_config.json", f"{run}/resume/state.pt", f"{run}/last/model.safetensors"} <= members
    bad = subprocess.run(command[:2] + ["--bogus"], check=False, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


def test_hallucinate_stage_benchmark_needs_no_cv2_or_dlib(pack_dir, blocked_env, tmp_path):
    out = tmp_path / "stage.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "hallucinate_stage.py"), "--faces", str(pack_dir),
        "--device", "cpu", "--images", "12", "--batch-size", "4", "--warmup", "1", "--skip-paper", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        command, check=False, env=blocked_env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["identity_weights"] == str(pack_dir / "identity.safetensors") and record["batch_size"] == 4
    assert set(record["results"]) == {"shipped", "default widths (random)"}
    shipped = record["results"]["shipped"]
    assert shipped["images_timed"] == 8 and shipped["parameters"] == 3_499_631  # the GAN blend
    assert shipped["stage_images_per_second"] > 0 and shipped["generator_images_per_second"] > 0
    assert 0.5 < shipped["mean_match_score"] <= 1.0  # real faces, context painted around them

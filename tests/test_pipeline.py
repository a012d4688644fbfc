"""augmentor run: file names, manifest, stages on plain dicts, and the Ray pipeline end to end, resumed after a kill."""

from __future__ import annotations

import json
import os
import re
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
from helpers import process_parents

from augmentor.cli import main
from augmentor.datasets.paths import hashed_name, image_path, is_verbatim, output_stems, safe_name
from augmentor.locking import LOCK_FILE
from augmentor.manifest import (
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    consolidate,
    identity_labels,
    part_paths,
    read_manifest,
    write_part,
)
from augmentor.preprocessing.shards import decode_png
from pipelines.plan import MAX_COPIES, check_run_file, count_rows, plan_resources, plan_work, set_bits
from pipelines.stages import MaskStage, PredictAndWrite, Predictor, noise_seed, write_batch

# Ray 2.60's own DataContext() sets its deprecated fields; nothing here uses them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

ODD_IDENTITY = "José María"  # a space and accents: sanitised in paths, verbatim in the manifest


@pytest.fixture(scope="module")
def lfw_tree(tmp_path_factory, lfw_images) -> Path:
    """An LFW layout: 3 faces, one under an odd identity, a truncated JPEG and a faceless image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("lfw")
    for path in lfw_images[:2]:
        person = path.stem.rsplit("_", 1)[0]
        (root / person).mkdir()
        (root / person / path.name).write_bytes(path.read_bytes())
    (root / ODD_IDENTITY).mkdir()
    (root / ODD_IDENTITY / "photo 1.jpg").write_bytes(lfw_images[2].read_bytes())
    (root / "Broken").mkdir()
    (root / "Broken" / "Broken_0001.jpg").write_bytes(lfw_images[3].read_bytes()[:3000])
    (root / "Nobody").mkdir()
    Image.new("RGB", (160, 160), (90, 120, 150)).save(root / "Nobody" / "Nobody_0001.jpg")
    return root


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", "--no-progress", *args])
    return result.exit_code, result.output


# --- file names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["..", ".", "a/b", "../../etc/passwd", "nul\0byte", ".hidden", "-rf", "x" * 101, "CON", "aux.txt", "José", "", " "],
)
def test_unsafe_names_are_hashed(name):
    safe = safe_name(name)
    assert not is_verbatim(name) and safe == hashed_name(name) and safe == safe_name(name)
    assert "/" not in safe and "\0" not in safe and not safe.startswith((".", "-")) and len(safe) <= 61
    assert is_verbatim(safe.replace("+", "_"))  # only plain characters besides the marker


def test_plain_names_are_kept_and_the_mapping_is_injective():
    for name in ("Aaron_Eckhart", "0000045", "Jean-Pierre_Raffarin", "x" * 100, "a.b"):
        assert safe_name(name) == name
    tricky = ["a/b", "a_b", "a b", "a+b", "A/B", "..", "._", "_", "José", "Jose", "\ud800"]
    assert len({safe_name(n) for n in tricky}) == len(tricky)


def test_output_stems_are_unique_even_case_blind():
    identities = ["Alice", "alice", "X", "X", "X", "p", "p", "..", "CON"]
    image_ids = ["Alice/a1", "alice/a1", "X/foo", "foo", "X/img.v2", "u/p/1", "v/p/1", "../1", "CON/1"]
    stems = output_stems(identities, image_ids)
    assert stems == output_stems(identities, image_ids)  # deterministic
    assert len({s.lower() for s in stems}) == len(stems)
    assert stems[4] == "X/img.v2"  # the common case stays readable
    assert all(".." not in s.split("/") and not s.startswith("/") for s in stems)
    assert stems[7].split("/")[0] == hashed_name("..") and stems[8].startswith(hashed_name("CON"))
    assert image_path("X/foo", 3, "png") == "images/X/foo_hal3.png"


# --- manifest, listing and resources -------------------------------------------------------------------------


def _rows(n: int, start: int = 0) -> dict[str, list]:
    return {
        "image_id": [f"id{i}" for i in range(start, start + n)],
        "identity": ["b"] * n,
        "label": [1] * n,
        "copy": [0] * n,
        "source_path": ["/x.jpg"] * n,
        "output_path": [None] * n,
        "status": ["error"] * n,
        "reason": ["unreadable: x"] * n,
        "model_id": ["0" * 16] * n,
        "seed": [1] * n,
        "mask_area": [None] * n,
        "match_score": [None] * n,
    }


def test_manifest_parts_consolidate_without_double_counting(tmp_path):
    write_part(_rows(3), tmp_path)
    write_part(_rows(3), tmp_path)  # the same batch again (a retried task): same part name
    write_part(_rows(2, start=2), tmp_path)  # overlapping keys under another part
    assert len(part_paths(tmp_path)) == 2
    assert read_manifest(tmp_path).num_rows == 4
    table = consolidate(tmp_path)
    assert table.num_rows == 4 and not part_paths(tmp_path)
    assert pq.read_schema(tmp_path / MANIFEST_FILE).equals(MANIFEST_SCHEMA, check_metadata=False)
    write_part(_rows(2, start=3), tmp_path)  # a later run's part overlapping the consolidated file
    assert consolidate(tmp_path).num_rows == 5


def test_run_file_guards_the_folder(tmp_path):
    info = {"model_id": "a" * 16, "copies": 1, "format": "png", "seed": 0, "identities": "2 identities, sha256 0"}
    check_run_file(tmp_path, info)
    check_run_file(tmp_path, {**info, "dataset": "lfw", "root": "/elsewhere"})  # other fields may change
    with pytest.raises(ValueError, match="identities '2 identities, sha256 0' there, '3 identities"):
        check_run_file(tmp_path, {**info, "identities": "3 identities, sha256 1"})
    write_part(_rows(1), tmp_path / "foreign")
    with pytest.raises(ValueError, match=r"no run\.json"):
        check_run_file(tmp_path / "foreign", info)


def test_labels_and_todo_bits():
    table = pd.DataFrame(
        {"image_id": ["b/1", "a/1", "c/1", "a/2"], "identity": ["b", "a", "c", "a"], "path": ["p"] * 4}
    )
    assert identity_labels(table["identity"]) == {"a": 0, "b": 1, "c": 2}
    done = pd.DataFrame({"image_id": ["b/1", "b/1", "a/1", "a/1"], "copy": [0, 1, 1, 5]})
    listing = plan_work(table, copies=3, limit=3, done=done)
    assert listing["label"].tolist() == [1, 0, 2]  # from the whole listing, not the first 3
    assert listing["todo"].tolist() == [0b100, 0b101, 0b111]
    assert listing["out_stem"].tolist() == ["b/1", "a/1", "c/1"]


def test_rows_are_counted_without_numpy_2(monkeypatch):
    """Bug: count_rows used np.bitwise_count, which NumPy 1.x lacks (and facenet-pytorch pins numpy<2)."""
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    todo = [0, 1, 0b101, 2**31 - 1, 2**32 - 1, 2**62 + 3]
    listing = pd.DataFrame({"todo": np.array(todo, np.int64)})
    assert count_rows(listing) == sum(v.bit_count() for v in todo)
    assert set_bits(np.array(todo, np.int64)).tolist() == [v.bit_count() for v in todo]


def test_resource_plans_fit_the_cluster():
    for cpus, workers, expected in [
        (2, None, (1, 2, 1)),
        (2, 1, (1, 1, 2)),
        (16, None, (4, 16, 1)),
        (64, 4, (1, 4, 16)),
    ]:
        cpu = plan_resources(cpus, 0, workers, None)
        assert (cpu.mask_actors, cpu.predictor_actors, cpu.torch_threads) == expected
        assert cpu.device == "cpu" and cpu.batch_size == 16 and cpu.fused_write
        assert cpu.mask_actors * cpu.mask_cpus + cpu.predictor_actors * cpu.predictor_cpus + 2 * cpu.write_cpus <= cpus
    gpu = plan_resources(16, 2, None, 128)
    assert (gpu.predictor_actors, gpu.predictor_gpus, gpu.device, gpu.batch_size) == (2, 1.0, "cuda", 128)
    assert not gpu.fused_write  # PNG encoding would starve the GPU actor's one CPU: write tasks instead
    assert gpu.precision == "bf16" and plan_resources(16, 2, None, None, "fp32").precision == "fp32"
    assert plan_resources(2, 0, None, None, "bf16").precision == "bf16"
    assert gpu.mask_actors * gpu.mask_cpus + 2 * gpu.predictor_cpus <= 16
    assert plan_resources(64, 0, 4, None).predictor_cpus == 15.0  # whole CPUs above 1
    with pytest.raises(ValueError, match="need more than"):
        plan_resources(2, 2, None, None)


# --- stages on plain dicts (no Ray) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def masked_batch(lfw_images, tmp_path_factory):
    bad = tmp_path_factory.mktemp("bad") / "broken.jpg"
    bad.write_bytes(b"not an image")
    paths = [str(lfw_images[0]), str(bad), str(lfw_images[1])]
    batch = {
        "image_id": np.asarray(["a/1", "b/1", "c/1"], dtype=object),
        "identity": np.asarray(["a", "b", "c"], dtype=object),
        "label": np.asarray([0, 1, 2], np.int32),
        "path": np.asarray(paths, dtype=object),
        "out_stem": np.asarray(["a/1", "b/1", "c/1"], dtype=object),
        "todo": np.asarray([0b11, 0b11, 0b10], np.int64),
    }
    return MaskStage()(batch)


def test_predictor_on_a_plain_dict(tiny_checkpoints, masked_batch, tmp_path):
    assert masked_batch["status"].tolist() == ["ok", "error", "ok"]
    assert masked_batch["reason"][1].startswith("not_an_image")
    predictor = Predictor(str(tiny_checkpoints / "noisy"), copies=2, device="cpu", batch_size=2)
    out = predictor(masked_batch)
    assert out["image_id"].tolist() == ["a/1", "a/1", "b/1", "b/1", "c/1"]  # c/1 has copy 1 left only
    assert out["copy"].tolist() == [0, 1, 0, 1, 1]
    assert out["image"].shape == (5, 128, 128, 3) and out["image"].dtype == np.uint8
    assert out["seed"][0] == noise_seed("a/1", 0) and out["seed"][0] != out["seed"][1]
    face = masked_batch["mask"][0].astype(bool)
    for k in (0, 1):  # face pixels bit-identical to the aligned original, background hallucinated
        assert np.array_equal(out["image"][k][face], masked_batch["aligned"][0][face])
    assert not np.array_equal(out["image"][0][~face], out["image"][1][~face])  # two different copies
    assert np.isnan(out["match_score"][2:4]).all() and not out["image"][2:4].any()
    scores = out["match_score"][[0, 1, 4]]
    assert np.all((scores > 0) & (scores <= 1))
    # An image's copy is the same whatever batch it comes in.
    alone = predictor({name: values[2:] for name, values in masked_batch.items()})
    assert alone["seed"][0] == out["seed"][4]
    assert np.abs(alone["image"][0].astype(int) - out["image"][4]).max() <= 1

    record = write_batch(out, str(tmp_path), "jpeg", "f" * 16)
    assert record["write_s"].shape == (5,) and (tmp_path / "images/a/1_hal1.jpg").is_file()
    manifest = read_manifest(tmp_path).to_pandas()
    assert manifest["output_path"].isna().tolist() == [False, False, True, True, False]
    assert manifest["reason"].tolist()[2].startswith("not_an_image")

    # The CPU layout: the same actor predicts and writes; same files, same record.
    fused = PredictAndWrite(
        out_dir=str(tmp_path / "fused"), image_format="jpeg", model_id="f" * 16,
        model=str(tiny_checkpoints / "noisy"), copies=2, device="cpu", batch_size=2,
    )  # fmt: skip
    fused_record = fused(masked_batch)
    assert sorted(fused_record) == sorted(record) and fused_record["image_id"].tolist() == out["image_id"].tolist()
    assert (tmp_path / "fused/images/a/1_hal1.jpg").read_bytes() == (tmp_path / "images/a/1_hal1.jpg").read_bytes()
    assert read_manifest(tmp_path / "fused").to_pandas()["output_path"].isna().sum() == 2


# --- the Ray pipeline -----------------------------------------------------------------------------------------


@pytest.mark.ray
def test_end_to_end(ray_session, tiny_checkpoints, lfw_tree, tmp_path, masker):
    out = tmp_path / "out"
    code, text = _run("--dataset", "lfw", "--root", str(lfw_tree), "--model", str(tiny_checkpoints / "plain"),
                      "--out", str(out), "--workers", "1", "--batch-size", "2", "--precision", "bf16")  # fmt: skip
    assert code == 0, text
    assert "3 ok, 1 no face, 1 errors" in text and "hallucinate" in text and "end to end" in text
    assert "1 cpu hallucinating actor(s) in bf16, batch 2" in text

    frame = pd.read_parquet(out / MANIFEST_FILE)
    table = pq.read_table(out / MANIFEST_FILE)
    rayframe = ray_session.data.read_parquet(str(out / MANIFEST_FILE)).to_pandas()
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    assert len(frame) == len(table) == len(rayframe) == 5
    assert sorted(rayframe["image_id"]) == sorted(frame["image_id"])
    identities = sorted(frame["identity"])
    assert frame["label"].tolist() == [identities.index(i) for i in frame["identity"]]
    rows = frame.set_index("identity")
    assert rows.loc["Nobody", "status"] == "no_face" and pd.isna(rows.loc["Nobody", "output_path"])
    assert rows.loc["Broken", "status"] == "error" and rows.loc["Broken", "reason"].startswith("truncated")
    odd = rows.loc[ODD_IDENTITY]
    assert odd["image_id"] == f"{ODD_IDENTITY}/photo 1" and odd["status"] == "ok"
    assert odd["output_path"] == f"images/{hashed_name(ODD_IDENTITY)}/{hashed_name('photo 1')}_hal0.png"
    ok = frame[frame["status"] == "ok"]
    assert ok["model_id"].nunique() == 1 and ok["match_score"].between(-1, 1).all()
    assert ok["mask_area"].between(0.05, 0.5).all()
    for _, row in ok.iterrows():
        image = decode_png((out / row["output_path"]).read_bytes())
        face = masker(row["source_path"])
        inside = face.mask.astype(bool)
        assert image.shape == (128, 128, 3) and np.array_equal(image[inside], face.aligned[inside])
    assert sorted(p.name for p in out.iterdir()) == [
        LOCK_FILE, "images", "manifest.parquet", "preview.png", "run.json", "summary.json"
    ]  # fmt: skip
    sheet = decode_png((out / "preview.png").read_bytes())
    assert sheet.shape == (3 * 128, 3 * 128, 3)  # 3 ok faces x (original | masked | copy 0)
    first = ok.sort_values("image_id").drop_duplicates("identity").iloc[0]
    assert np.array_equal(sheet[:128, 256:], decode_png((out / first["output_path"]).read_bytes()))
    assert np.array_equal(sheet[:128, :128], masker(first["source_path"]).aligned)
    assert json.loads((out / "run.json").read_text())["model_id"] == ok["model_id"].iloc[0]

    code, text = _run("--dataset", "lfw", "--root", str(lfw_tree), "--model", str(tiny_checkpoints / "plain"),
                      "--out", str(out))  # fmt: skip
    assert code == 0 and "5 already done, 0 made" in text
    code, text = _run("--dataset", "lfw", "--root", str(lfw_tree), "--model", str(tiny_checkpoints / "plain"),
                      "--out", str(out), "--format", "jpeg")  # fmt: skip
    assert code == 1 and "other settings" in text and "Traceback" not in text


def test_summary_hides_a_steady_rate_it_cannot_measure():
    from pipelines.augment import RunSummary, StageStats, format_summary

    summary = RunSummary(out="o", images=24, copies=1, skipped=0, processed=24, seconds=7.6, steady_rows=8,
                         steady_seconds=0.005, stages={"mask": StageStats(24, 0.4, 1)})  # fmt: skip
    assert "(run too short)" in format_summary(summary) and "1600.0" not in format_summary(summary)
    summary.steady_seconds = 4.0
    assert re.search(r"steady state\s+8\s+4\.0\s+2\.0", format_summary(summary))


@pytest.mark.ray
def test_write_tasks_layout(ray_session, tiny_checkpoints, lfw_tree, tmp_path, monkeypatch):
    """The GPU layout (separate write tasks), forced on CPU actors: same manifest as the fused CPU layout."""
    from pipelines import augment

    plans = []

    def unfused(*args):
        plans.append(plan_resources(*args))
        plans[-1].fused_write = False
        return plans[-1]

    monkeypatch.setattr(augment, "plan_resources", unfused)
    out = tmp_path / "out"
    code, text = _run("--dataset", "lfw", "--root", str(lfw_tree), "--model", str(tiny_checkpoints / "plain"),
                      "--out", str(out), "--workers", "1", "--batch-size", "2")  # fmt: skip
    assert code == 0, text
    assert len(plans) == 1 and "3 ok, 1 no face, 1 errors" in text
    assert re.search(r"write\s+5\s+[\d.]+\s+tasks", text)
    frame = pd.read_parquet(out / MANIFEST_FILE)
    assert len(frame) == 5 and frame["output_path"].notna().sum() == 3
    assert all((out / p).is_file() for p in frame["output_path"].dropna())


@pytest.mark.ray
def test_copies_give_different_backgrounds_and_the_same_face(ray_session, tiny_checkpoints, lfw_tree, tmp_path):
    model = str(tiny_checkpoints / "noisy")
    out = tmp_path / "out"
    code, text = _run("--dataset", "lfw", "--root", str(lfw_tree), "--model", model, "--out", str(out),
                      "--copies", "2", "--workers", "1", "--limit", "3")  # fmt: skip
    assert code == 0, text
    frame = pd.read_parquet(out / MANIFEST_FILE)
    assert len(frame) == 6 and frame.groupby("image_id")["copy"].apply(lambda ks: sorted(ks) == [0, 1]).all()
    assert not frame.duplicated(["image_id", "copy"]).any()
    ok = frame[frame["status"] == "ok"]
    assert decode_png((out / "preview.png").read_bytes()).shape == (ok["image_id"].nunique() * 128, 4 * 128, 3)
    for _, pair in ok.groupby("image_id"):
        a, b = (decode_png((out / p).read_bytes()).astype(int) for p in pair.sort_values("copy")["output_path"])
        assert pair["seed"].nunique() == 2
        assert (a != b).any(axis=-1).mean() > 0.3  # different backgrounds ...
        assert (a == b).all(axis=-1).mean() > 0.05  # ... around the same face pixels
    code, text = _run("--dataset", "lfw", "--root", str(lfw_tree), "--model", str(tiny_checkpoints / "plain"),
                      "--out", str(tmp_path / "det"), "--copies", "2")  # fmt: skip
    assert code == 1 and "noise_channels=0" in text


@pytest.mark.slow  # kill test
@pytest.mark.ray
def test_resume_after_sigkill_of_the_driver(ray_session, tiny_checkpoints, lfw_images, tmp_path):
    """Kill -9 a running job, rerun it, and get every image x copy in the manifest exactly once."""
    root = tmp_path / "lfw"
    for i in range(36):
        path = lfw_images[i % len(lfw_images)]
        (root / f"Person_{i // 4:02d}").mkdir(parents=True, exist_ok=True)
        (root / f"Person_{i // 4:02d}" / f"img_{i:03d}.jpg").write_bytes(path.read_bytes())
    out = tmp_path / "out"
    args = ["--dataset", "lfw", "--root", str(root), "--model", str(tiny_checkpoints / "noisy"), "--out", str(out),
            "--copies", "2", "--workers", "1", "--batch-size", "2"]  # fmt: skip
    address = ray_session.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "augmentor.cli", "run", "--no-progress", "--address", address, *args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not part_paths(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert part_paths(out) and not (out / MANIFEST_FILE).exists(), "the kill should land mid-run"
    written = read_manifest(out).num_rows
    assert 0 < written < 72

    code, text = _run(*args)
    assert code == 0, text
    frame = pd.read_parquet(out / MANIFEST_FILE)
    assert len(frame) == 72 and not frame.duplicated(["image_id", "copy"]).any()
    assert int(re.search(r"\((\d+) already done", text).group(1)) >= written  # + any batch finishing after the kill
    assert not part_paths(out) and not (out / ".staging").exists()
    ok = frame[frame["status"] == "ok"]
    assert all((out / p).is_file() for p in ok["output_path"])
    assert len(list((out / "images").rglob("*.png"))) == len(ok)


def _descendants_named(title: str) -> list[int]:
    """Processes under this test process (so of its own Ray cluster) whose command line starts with ``title``."""
    parents, found = process_parents(), []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, os.getpid()):
            ancestor = parents.get(ancestor)
        try:
            if ancestor == os.getpid() and (Path("/proc") / str(pid) / "cmdline").read_text().startswith(title):
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.slow  # kill test
@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_a_killed_worker_is_replaced_and_the_job_completes(ray_session, tiny_checkpoints, lfw_images, tmp_path):
    root = tmp_path / "lfw"
    for i in range(24):
        (root / f"Person_{i // 4:02d}").mkdir(parents=True, exist_ok=True)
        (root / f"Person_{i // 4:02d}" / f"img_{i:03d}.jpg").write_bytes(lfw_images[i % len(lfw_images)].read_bytes())
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "augmentor.cli", "run", "--no-progress", "--address", address, "--dataset", "lfw",
               "--root", str(root), "--model", str(tiny_checkpoints / "plain"), "--out", str(out), "--workers", "1",
               "--batch-size", "2"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Kill the predictor actor as soon as it exists: waiting for the first written part lets a quiet machine
    # finish all 24 faces, and Ray tear the actor down, before the scan of /proc finds it.
    deadline = time.monotonic() + 120
    victims: list[int] = []
    while not victims and time.monotonic() < deadline and proc.poll() is None:
        victims = _descendants_named("ray::MapWorker(MapBatches(Predict")  # Predictor or PredictAndWrite
        time.sleep(0.01)
    assert len(victims) == 1 and proc.poll() is None, "the kill should land mid-run"
    assert not (out / MANIFEST_FILE).exists()
    os.kill(victims[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    frame = pd.read_parquet(out / MANIFEST_FILE)
    assert len(frame) == 24 and not frame.duplicated(["image_id", "copy"]).any()


# --- the command line -----------------------------------------------------------------------------------------


def test_cli_stays_light_and_checks_its_input(tmp_path, tiny_checkpoints):
    probe = "import sys, augmentor.cli, pipelines.run_cli; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"  # `augmentor --help` stays instant
    from pipelines import run_cli

    assert run_cli.MAX_COPIES == MAX_COPIES
    from augmentor import hallucinator

    with pytest.MonkeyPatch.context() as patch:  # an install that lost its shipped weights
        patch.setattr(hallucinator, "DEFAULT_WEIGHTS", tmp_path / "missing")
        code, text = _run("--out", str(tmp_path / "x"))
    assert code == 1 and "pass --model" in text and "shipped default model is missing" in text
    code, text = _run("--out", str(tmp_path / "x"), "--model", str(tmp_path))
    assert code == 2 and "not a checkpoint folder" in text
    code, text = _run("--out", str(tmp_path / "x"), "--root", str(tmp_path))
    assert code == 2 and "--root needs --dataset" in text
    code, text = _run("--out", str(tmp_path / "x"), "--model", str(tiny_checkpoints / "plain"), "--limit", "3", "-n")
    assert code == 0, text
    report = json.loads(text)
    assert report["images"] == 3 and report["rows_todo"] == 3 and report["copies"] == 1
    assert report["precision"] == "auto" and report["plan"]["precision"] in ("fp32", "bf16")
    code, text = _run(
        "--out", str(tmp_path / "x"), "--model", str(tiny_checkpoints / "plain"), "--precision", "bf16", "-n"
    )
    assert code == 0 and json.loads(text)["plan"]["precision"] == "bf16"
    code, text = _run("--out", str(tmp_path / "x"), "--model", str(tiny_checkpoints / "plain"), "--precision", "fp16")
    assert code == 2 and "fp16" in text
    assert not (tmp_path / "x").exists()  # a dry run writes nothing


def test_cli_checks_model_and_donors_go_together(tmp_path, tiny_checkpoints):
    out = ["--out", str(tmp_path / "x"), "-n"]
    code, text = _run("--method", "donor", *out)
    assert code == 2 and "needs --donors" in text
    code, text = _run("--method", "donor", "--donors", str(tmp_path), "--model", str(tiny_checkpoints / "plain"), *out)
    assert code == 2 and "drop --model" in text
    code, text = _run("--donors", str(tmp_path), *out)
    assert code == 2 and "goes with --method donor" in text

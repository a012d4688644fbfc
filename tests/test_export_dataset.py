"""Issue 26: `augmentor export-dataset`, each format read back by a reader that is not the writer."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from augmentor.cli import main

NOVEL = "José María"  # an identity only the copies have, whose folder name is hashed


# --------------------------------------------------------------------------------------------------- fixtures


def _crops(face_shards: Path) -> dict[str, dict]:
    from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

    table = read_shards(face_shards, columns=["image_id", "identity", "source_path", "aligned", "mask"], status="ok")
    return {
        r["image_id"]: {**r, "image": decode_png(r["aligned"]), "mask_array": decode_mask(r["mask"])}
        for r in table.to_pylist()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, face_shards) -> Path:
    """An `augmentor run` folder: two copies of every real crop (noise outside the face), one donor copy of a new
    identity, a failed row, and a part file that repeats a merged key with another output."""
    from augmentor.manifest import MANIFEST_FILE, PARTS_DIR, write_atomic, write_part
    from augmentor.manifest import MANIFEST_SCHEMA as schema
    from augmentor.preprocessing.shards import encode_png

    out = tmp_path_factory.mktemp("run")
    (out / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    crops = _crops(face_shards)
    for i, (image_id, crop) in enumerate(sorted(crops.items())):
        for copy in (0, 1):
            mask = crop["mask_array"][..., None]
            noise = rng.integers(0, 255, crop["image"].shape, dtype=np.uint8)
            rel = f"images/{i:03d}_hal{copy}.png"
            (out / rel).write_bytes(encode_png(crop["image"] * mask + noise * (1 - mask)))
            rows.append(_run_row(image_id, crop["identity"], copy, crop["source_path"], rel))
    novel = f"images/{NOVEL}_hal0.png"
    (out / novel).write_bytes(encode_png(np.full((128, 128, 3), 90, np.uint8)))
    rows.append(_run_row("Jose/0001", NOVEL, 0, "/data/jose.jpg", novel, donor=("Anna/0003", "Anna")))
    rows.append({**_run_row("Ghost/0001", "Ghost", 0, "/data/ghost.jpg", None), "status": "no_face"})
    write_atomic(pa.Table.from_pylist(rows, schema=schema), out / MANIFEST_FILE)
    again = {k: [v] for k, v in {**rows[0], "output_path": "images/not-there.png"}.items()}
    write_part(again, out)  # the merged row wins: this part's missing file must not be read
    assert (out / PARTS_DIR).is_dir()
    return out


def _run_row(image_id, identity, copy, source_path, output_path, donor=(None, None)) -> dict:
    return {
        "image_id": image_id,
        "identity": identity,
        "label": 0,
        "copy": copy,
        "source_path": source_path,
        "output_path": output_path,
        "status": "ok",
        "reason": "",
        "model_id": "test",
        "seed": 0,
        "mask_area": 0.5,
        "match_score": 0.9,
        "donor_image_id": donor[0],
        "donor_identity": donor[1],
    }


def _export(sources: list[Path], out: Path, fmt: str, *extra: str):
    args = ["export-dataset", *map(str, sources), "--to", fmt, "--out", str(out), "--no-progress", *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, face_shards, run_dir) -> dict[str, Path]:
    """The fixture exported to every format at 112 px."""
    root = tmp_path_factory.mktemp("exports")
    made = {}
    for fmt in ("imagefolder", "webdataset", "insightface", "hf"):
        result = _export([face_shards, run_dir], root / fmt, fmt, "--size", "112", "--shard-size", "7")
        assert result.exit_code == 0, result.output
        made[fmt] = root / fmt
    return made


def _tsv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _expected(face_shards: Path) -> dict:
    """What every export must hold: 10 real crops, 20 copies of their identities and one copy of NOVEL."""
    crops = _crops(face_shards)
    identities = sorted({c["identity"] for c in crops.values()})
    return {"crops": crops, "identities": identities, "num": 3 * len(crops) + 1}


def _close(decoded: np.ndarray, reference: np.ndarray) -> None:
    """A decoded export image matches its source crop resized to 112 px (JPEG at quality 95)."""
    import cv2

    want = cv2.resize(reference, (112, 112), interpolation=cv2.INTER_AREA).astype(float)
    assert decoded.shape == (112, 112, 3)
    assert np.abs(decoded.astype(float) - want).mean() < 4.0


# --------------------------------------------------------------------------------------------------- common files


def test_labels_and_samples_tables(exports, face_shards, run_dir):
    expected = _expected(face_shards)
    for fmt, out in exports.items():
        labels = _tsv(out / "labels.tsv")
        folders = [r["folder"] for r in labels]  # labels number the folders in sorted order
        assert folders == sorted(folders) and [int(r["label"]) for r in labels] == list(range(len(labels)))
        assert sorted(r["identity"] for r in labels) == sorted([*expected["identities"], NOVEL])
        novel = next(r for r in labels if r["identity"] == NOVEL)
        assert novel["folder"].startswith("Jose_Maria+") and (novel["real"], novel["copies"]) == ("0", "1")
        others = [r for r in labels if r is not novel]
        assert all(r["folder"] == r["identity"] and r["real"] == "1" and r["copies"] == "2" for r in others)
        samples = _tsv(out / "samples.tsv")
        assert len(samples) == expected["num"], fmt
        label_of = {r["identity"]: int(r["label"]) for r in labels}
        assert all(int(s["label"]) == label_of[s["identity"]] for s in samples)
        kinds = [s["kind"] for s in samples]
        assert kinds.count("real") == 10 and kinds.count("copy") == 21
        donor = next(s for s in samples if s["identity"] == NOVEL)
        assert (donor["donor_image_id"], donor["donor_identity"], donor["copy"]) == ("Anna/0003", "Anna", "0")
        assert {s["copy"] for s in samples if s["kind"] == "copy"} == {"0", "1"}
        assert "Ghost/0001" not in {s["image_id"] for s in samples}  # only ok rows
        summary = json.loads((out / "export.json").read_text())
        assert summary["num_samples"] == expected["num"] and summary["size"] == 112 and summary["format"] == fmt
        assert summary["images_per_second"] > 0
        assert not list(out.parent.glob(f".{out.name}.partial-*"))


# --------------------------------------------------------------------------------------------------- formats


def test_imagefolder_reads_back_with_torchvision(exports, face_shards):
    from torchvision.datasets import ImageFolder

    out = exports["imagefolder"]
    folder = ImageFolder(str(out))
    labels = _tsv(out / "labels.tsv")
    assert folder.class_to_idx == {r["folder"]: int(r["label"]) for r in labels}  # the same numbering
    samples = {s["location"]: s for s in _tsv(out / "samples.tsv")}
    assert len(folder) == len(samples)
    crops = _expected(face_shards)["crops"]
    for path, target in folder.samples:
        sample = samples[str(Path(path).relative_to(out))]
        assert int(sample["label"]) == target
        if sample["kind"] == "real":
            _close(np.asarray(folder.loader(path)), crops[sample["image_id"]]["image"])


def test_webdataset_reads_back_with_webdataset(exports, face_shards):
    wds = pytest.importorskip("webdataset")
    out = exports["webdataset"]
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    assert len(shards) == 5 and not list(out.glob(".*.tmp"))  # 31 samples, 7 per shard
    dataset = (
        wds.WebDataset(shards, shardshuffle=False, empty_check=False)
        .decode("rgb8")
        .to_tuple("__key__", "jpg", "cls", "json")
    )
    labels = {r["identity"]: int(r["label"]) for r in _tsv(out / "labels.tsv")}
    crops = _expected(face_shards)["crops"]
    seen = []
    for key, image, label, meta in dataset:
        seen.append(key)
        assert label == meta["label"] == labels[meta["identity"]]
        if meta["kind"] == "real":
            _close(image, crops[meta["image_id"]]["image"])
            assert meta["copy"] is None
    assert seen == sorted(seen) and len(seen) == _expected(face_shards)["num"]


MAGIC = 0xCED7230A


def read_recordio(rec: Path, idx: Path) -> dict[int, bytes]:
    """A RecordIO reader written from the format description: magic, ``cflag << 29 | length``, payload padded to
    4 bytes; a record split in parts (cflag 1, 2, 3) is joined with the magic between the parts."""
    data = rec.read_bytes()
    records = {}
    for line in idx.read_text().splitlines():
        index, offset = (int(v) for v in line.split("\t"))
        parts = []
        while True:
            magic, word = struct.unpack_from("<II", data, offset)
            assert magic == MAGIC, f"record {index}: no magic at {offset}"
            cflag, length = word >> 29, word & ((1 << 29) - 1)
            parts.append(data[offset + 8 : offset + 8 + length])
            offset += 8 + length + (-length % 4)
            if cflag in (0, 3):
                break
        records[index] = struct.pack("<I", MAGIC).join(parts)
    return records


def unpack(record: bytes) -> tuple[tuple[int, float, int, int], np.ndarray | None, bytes]:
    """mx.recordio.unpack: the 24-byte IRHeader (flag, label, id, id2), then ``flag`` float32 labels, then bytes."""
    flag, label, record_id, id2 = struct.unpack_from("<IfQQ", record)
    rest = record[24:]
    labels = None
    if flag > 0:
        labels, rest = np.frombuffer(rest[: 4 * flag], "<f4"), rest[4 * flag :]
    return (flag, label, record_id, id2), labels, rest


def test_insightface_reads_back_as_mxfacedataset_does(exports, face_shards):
    import cv2

    out = exports["insightface"]
    expected = _expected(face_shards)
    records = read_recordio(out / "train.rec", out / "train.idx")
    (flag, _, _, _), header_labels, _ = unpack(records[0])
    assert flag == 2 and header_labels.tolist() == [expected["num"] + 1] * 2
    image_indices = range(1, int(header_labels[0]))  # MXFaceDataset: imgidx = range(1, header.label[0])
    assert sorted(records) == [0, *image_indices]
    assert (out / "property").read_text().strip() == f"{len(expected['identities']) + 1},112,112"
    samples = _tsv(out / "samples.tsv")
    crops = expected["crops"]
    for index in image_indices:
        (flag, label, record_id, _), _, jpeg = unpack(records[index])
        sample = samples[index - 1]
        assert flag == 0 and record_id == index and sample["location"] == str(index)
        assert label == float(sample["label"])
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        if sample["kind"] == "real":
            _close(image, crops[sample["image_id"]]["image"])


def test_recordio_splits_a_payload_holding_the_magic(tmp_path):
    from augmentor.dataset_export.recordio import RecordWriter

    magic = struct.pack("<I", MAGIC)
    writer = RecordWriter(tmp_path)
    payloads = [b"abc" + magic + b"d" * 9, magic + b"x" * 2, b"y" * 4 + magic + b"zz" + magic]  # aligned in the record
    for label, payload in enumerate(payloads):
        writer.add(label, payload)
    writer.close()
    records = read_recordio(tmp_path / "train.rec", tmp_path / "train.idx")
    raw = (tmp_path / "train.rec").read_bytes()
    assert len(raw) % 4 == 0
    for index, payload in enumerate(payloads, start=1):
        (flag, label, record_id, _), _, body = unpack(records[index])
        assert (flag, label, record_id, body) == (0, index - 1, index, payload)
    # every aligned magic in the file starts a frame: the ones inside payloads (record 2's at payload offset 24 and
    # record 3's at 28; record 1's at 27 and record 3's at 34 are not aligned) were split out into frames
    frames, offset = [], 0
    while offset < len(raw):
        frames.append(offset)
        length = struct.unpack_from("<I", raw, offset + 4)[0] & ((1 << 29) - 1)
        offset += 8 + length + (-length % 4)
    assert [i for i in range(0, len(raw), 4) if raw[i : i + 4] == magic] == frames
    assert len(frames) == 4 + 2


def test_insightface_reads_back_with_mxnet(exports):
    mx = pytest.importorskip("mxnet")  # the real reader, where an mxnet build for this numpy installs
    out = exports["insightface"]
    record = mx.recordio.MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "r")
    header, _ = mx.recordio.unpack(record.read_idx(0))
    samples = _tsv(out / "samples.tsv")
    assert int(header.label[0]) == len(samples) + 1
    for index in range(1, len(samples) + 1):
        header, image = mx.recordio.unpack(record.read_idx(index))
        assert header.label == float(samples[index - 1]["label"])
        assert mx.image.imdecode(image).shape == (112, 112, 3)


def test_hf_loads_with_datasets(exports, face_shards, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = exports["hf"]
    files = sorted(str(p) for p in (out / "data").glob("*.parquet"))
    assert [Path(f).name for f in files] == [f"train-{i:05d}-of-00005.parquet" for i in range(5)]
    dataset = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    labels = _tsv(out / "labels.tsv")
    assert isinstance(dataset.features["image"], datasets.Image)
    assert isinstance(dataset.features["label"], datasets.ClassLabel)
    assert dataset.features["label"].names == [r["identity"] for r in labels]
    assert len(dataset) == _expected(face_shards)["num"]
    crops = _expected(face_shards)["crops"]
    for row in dataset:
        assert dataset.features["label"].int2str(row["label"]) == row["identity"]
        if row["kind"] == "real":
            _close(np.asarray(row["image"].convert("RGB")), crops[row["image_id"]]["image"])
    assert pq.read_table(files[0]).num_rows == 7


# --------------------------------------------------------------------------------------------------- behaviour


def test_default_size_keeps_the_crop_and_real_only_exports(tmp_path, face_shards):
    result = _export([face_shards], tmp_path / "plain", "imagefolder", "--jpeg-quality", "80")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "plain" / "export.json").read_text())
    assert summary["size"] == 128 and summary["num_copies"] == 0 and summary["num_real"] == 10
    assert "10 images (10 real, 0 copies)" in result.output


def test_errors_leave_nothing_behind(tmp_path, face_shards, run_dir):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("")
    result = _export([face_shards], taken, "hf")
    assert result.exit_code != 0 and "not empty" in result.output
    result = _export([tmp_path / "taken"], tmp_path / "a", "hf")
    assert result.exit_code != 0 and "neither a preprocess folder" in result.output
    broken = tmp_path / "broken-run"
    broken.mkdir()
    table = pq.read_table(run_dir / "manifest.parquet")
    pq.write_table(table, broken / "manifest.parquet")  # relative paths now point into an empty folder
    result = _export([face_shards, broken], tmp_path / "b", "webdataset")
    assert result.exit_code != 0 and "is missing" in result.output
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))
    result = _export([face_shards], tmp_path / "c", "tfrecord")
    assert result.exit_code != 0


def test_dry_run_counts(tmp_path, face_shards, run_dir):
    result = _export([face_shards, run_dir], tmp_path / "d", "insightface", "-n")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["num_real"], summary["num_copies"], summary["num_identities"]) == (10, 21, 11)
    assert [s["kind"] for s in summary["sources"]] == ["real", "copy"] and not (tmp_path / "d").exists()


def test_formats_match_the_writers():
    from augmentor.commands.export_dataset import FORMATS
    from augmentor.dataset_export.writers import FORMATS as WRITER_FORMATS
    from augmentor.dataset_export.writers import WRITERS

    assert FORMATS == WRITER_FORMATS == tuple(WRITERS)


def test_small_batches_and_chunks_give_the_same_export(tmp_path, monkeypatch, face_shards, run_dir, exports):
    """Reading 3 rows and encoding 4 images at a time (many batch and chunk boundaries) changes nothing."""
    from augmentor.dataset_export import export, sources

    monkeypatch.setattr(sources, "BATCH_ROWS", 3)
    monkeypatch.setattr(export, "CHUNK", 4)
    result = _export([face_shards, run_dir], tmp_path / "small", "imagefolder", "--size", "112", "--workers", "3")
    assert result.exit_code == 0, result.output
    reference = exports["imagefolder"]
    assert (tmp_path / "small" / "samples.tsv").read_text() == (reference / "samples.tsv").read_text()
    for sample in _tsv(reference / "samples.tsv"):
        path = sample["location"]
        assert (tmp_path / "small" / path).read_bytes() == (reference / path).read_bytes(), path


def test_command_is_listed_and_loads_light():
    import subprocess
    import sys

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "export-dataset" in result.output
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from augmentor.cli import main\n"
        "result = CliRunner().invoke(main, ['export-dataset', '--help'])\n"
        "assert result.exit_code == 0 and 'SOURCE...' in result.output, result.output\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set(done.stdout.split())
    assert "augmentor.commands.export_dataset" in modules
    heavy = {m for m in modules if m.split(".")[0] in ("torch", "ray", "pandas", "pipelines", "recognition", "cv2")}
    assert heavy == set()


def test_mixed_sizes_need_size_and_an_empty_out_is_used(tmp_path, face_shards):
    from augmentor.preprocessing.shards import encode_png

    small = tmp_path / "small-run"
    (small / "images").mkdir(parents=True)
    (small / "images" / "a.png").write_bytes(encode_png(np.zeros((64, 64, 3), np.uint8)))
    row = _run_row("A/0001", "A", 0, "/data/a.jpg", "images/a.png")
    pq.write_table(pa.Table.from_pylist([row]), small / "manifest.parquet")
    result = _export([face_shards, small], tmp_path / "mixed", "insightface")
    assert result.exit_code != 0 and "pass --size" in result.output and not (tmp_path / "mixed").exists()
    (tmp_path / "empty").mkdir()
    result = _export([face_shards, small], tmp_path / "empty", "insightface", "--size", "64")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "empty" / "property").read_text() == "11,64,64\n"


def test_a_pack_is_a_real_source(tmp_path, face_shards):
    """`augmentor pack` keeps only ok rows, without status or source_path columns, in faces.parquet."""
    from augmentor.preprocessing.shards import read_shards

    pack = tmp_path / "pack"
    pack.mkdir()
    pq.write_table(
        read_shards(face_shards, columns=["image_id", "identity", "aligned"], status="ok"), pack / "faces.parquet"
    )
    result = _export([pack], tmp_path / "out", "webdataset", "-n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_real"] == 10
    result = _export([pack], tmp_path / "out", "webdataset")
    assert result.exit_code == 0, result.output
    samples = _tsv(tmp_path / "out" / "samples.tsv")
    assert (
        len(samples) == 10 and {s["kind"] for s in samples} == {"real"} and {s["source_path"] for s in samples} == {""}
    )

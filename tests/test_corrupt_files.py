"""Bug: a truncated shard or manifest file stopped a job with "Parquet magic bytes not found in footer", naming no
file. Every reader names the file and says how to redo just that part."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augmentor.manifest import MANIFEST_SCHEMA, PARTS_DIR, read_manifest, write_part
from augmentor.parquet import CorruptFileError
from augmentor.preprocessing.shards import read_faces, read_shards
from pipelines.plan import RunSettings, prepare
from recognition.data import PIPELINE_COLUMNS, SHARD_COLUMNS, read_training_table


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def shards(tmp_path, face_shards) -> Path:
    """A copy of the fixture shards, with one more shard that a crash cut short."""
    folder = tmp_path / "shards"
    folder.mkdir()
    for path in sorted(face_shards.glob("part-*.parquet")):
        (folder / path.name).write_bytes(path.read_bytes())
    pq.write_table(pq.read_table(next(folder.glob("part-*.parquet"))), folder / "part-09999.parquet")
    _truncate(folder / "part-09999.parquet")
    return folder


def test_shard_readers_name_the_corrupt_file(shards):
    bad = str(shards / "part-09999.parquet")
    for read in (lambda: read_shards(shards), lambda: read_faces(shards), lambda: read_training_table([shards])):
        with pytest.raises(CorruptFileError, match=rf"{bad} cannot be read .*rerun `augmentor preprocess`"):
            read()


def test_a_corrupt_donor_shard_is_named_before_the_run_starts(shards, tmp_path):
    table = pd.DataFrame({"image_id": ["a"], "identity": ["x"], "path": ["a.jpg"]})
    settings = RunSettings(out=tmp_path / "out", model=None, method="donor", donors=shards)
    with pytest.raises(CorruptFileError, match=r"part-09999\.parquet cannot be read .*same --out"):
        prepare(table, settings)


def test_the_donor_bank_names_a_corrupt_shard(shards):
    from augmentor.donors import DonorBank, DonorConfig

    with pytest.raises(CorruptFileError, match=r"part-09999\.parquet cannot be read .*rerun `augmentor preprocess`"):
        DonorBank.load(shards, DonorConfig(appearance_weight=0.0), save=False)


def test_manifest_readers_name_the_corrupt_part(tmp_path):
    rows = {"image_id": ["a"], "identity": ["x"], "label": [0], "copy": [0], "source_path": ["a.jpg"],
            "output_path": ["a.png"], "status": ["ok"], "reason": [""], "model_id": ["m"], "seed": [1],
            "mask_area": [0.5], "match_score": [0.9]}  # fmt: skip
    write_part(rows, tmp_path)
    bad = _truncate(write_part({**rows, "image_id": ["b"]}, tmp_path))
    with pytest.raises(CorruptFileError, match=rf"{bad} cannot be read .*rerun `augmentor run` with the same --out"):
        read_manifest(tmp_path)
    with pytest.raises(CorruptFileError, match=rf"{bad}"):
        read_training_table([tmp_path])
    assert bad.parent.name == PARTS_DIR


def test_recognition_reads_columns_of_the_core_schemas():
    from augmentor.preprocessing.shards import SHARD_SCHEMA

    assert set(PIPELINE_COLUMNS) <= set(MANIFEST_SCHEMA.names)
    assert set(SHARD_COLUMNS) <= set(SHARD_SCHEMA.names)
    assert isinstance(MANIFEST_SCHEMA, pa.Schema)

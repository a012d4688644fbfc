"""The four output formats. Each writer takes samples one at a time (``add``) and finishes its files in ``close``.

* ``imagefolder``: ``<folder>/<key>.jpg``, one folder per identity (torchvision ``ImageFolder``).
* ``webdataset``: ``shard-000000.tar`` ... of ``key.jpg``, ``key.cls`` (the label as text) and ``key.json`` (the
  label and the provenance); each shard is written under a temporary name and renamed when full.
* ``insightface``: ``train.rec``, ``train.idx`` and ``property`` (:mod:`augmentor.dataset_export.recordio`).
* ``hf``: ``data/train-00000-of-0000N.parquet``: an ``image`` struct column (``bytes``, ``path``), a ``label``
  class column and the provenance columns; the schema carries the Hugging Face features (``Image``,
  ``ClassLabel`` with the identity names), so ``datasets.load_dataset("parquet", ...)`` loads images and labels.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from augmentor.dataset_export.labels import Labels
from augmentor.dataset_export.recordio import RecordWriter

FORMATS = ("imagefolder", "webdataset", "insightface", "hf")
HF_ROWS_PER_GROUP = 1000  # Parquet row group: what is held in memory before it is written


class ImageFolderWriter:
    def __init__(self, root: Path, labels: Labels, shard_size: int, size: int):
        self.root, self.labels = root, labels

    def add(self, key: str, label: int, jpeg: bytes, meta: dict) -> str:
        relative = f"{self.labels.folders[label]}/{key}.jpg"
        target = self.root / relative
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(jpeg)
        return relative

    def close(self) -> list[str]:
        return sorted(self.labels.folders)


class WebDatasetWriter:
    def __init__(self, root: Path, labels: Labels, shard_size: int, size: int):
        self.root, self.shard_size = root, shard_size
        self.shards: list[str] = []
        self.tar: tarfile.TarFile | None = None
        self.in_shard = 0

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: the same input gives the same bytes
        self.tar.addfile(info, io.BytesIO(data))

    def _finish_shard(self) -> None:
        if self.tar is not None:
            self.tar.close()
            name = self.shards[-1]
            (self.root / f".{name}.tmp").rename(self.root / name)
            self.tar = None

    def add(self, key: str, label: int, jpeg: bytes, meta: dict) -> str:
        if self.tar is None or self.in_shard == self.shard_size:
            self._finish_shard()
            self.shards.append(f"shard-{len(self.shards):06d}.tar")
            self.tar = tarfile.open(self.root / f".{self.shards[-1]}.tmp", "w")  # noqa: SIM115 - closed per shard
            self.in_shard = 0
        self._member(f"{key}.jpg", jpeg)
        self._member(f"{key}.cls", str(label).encode())
        self._member(f"{key}.json", json.dumps({"label": label, **meta}).encode())
        self.in_shard += 1
        return f"{self.shards[-1]}:{key}"

    def close(self) -> list[str]:
        self._finish_shard()
        return self.shards


class InsightFaceWriter:
    def __init__(self, root: Path, labels: Labels, shard_size: int, size: int):
        self.root, self.labels, self.size = root, labels, size
        self.records = RecordWriter(root)

    def add(self, key: str, label: int, jpeg: bytes, meta: dict) -> str:
        return str(self.records.add(label, jpeg))

    def close(self) -> list[str]:
        self.records.close()
        (self.root / "property").write_text(f"{len(self.labels)},{self.size},{self.size}\n")
        return ["train.rec", "train.idx", "property"]


HF_META = ("identity", "kind", "image_id", "source_path", "copy", "donor_image_id", "donor_identity", "origin")


def hf_schema(labels: Labels) -> pa.Schema:
    """The Parquet schema, with the ``datasets`` features in its ``huggingface`` metadata."""
    string = {"dtype": "string", "_type": "Value"}
    features = {
        "image": {"_type": "Image"},
        "label": {"names": labels.identities, "_type": "ClassLabel"},
        "key": string,
        **{name: string for name in HF_META},
        "copy": {"dtype": "int32", "_type": "Value"},
        "origin": {"dtype": "int32", "_type": "Value"},
    }
    fields = [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("label", pa.int64()),
        ("key", pa.string()),
        *[(name, pa.int32() if name in ("copy", "origin") else pa.string()) for name in HF_META],
    ]
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})


class HFWriter:
    def __init__(self, root: Path, labels: Labels, shard_size: int, size: int):
        self.root, self.shard_size = root / "data", shard_size
        self.root.mkdir()
        self.schema = hf_schema(labels)
        self.rows: list[dict] = []
        self.parts: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.in_shard = 0

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def add(self, key: str, label: int, jpeg: bytes, meta: dict) -> str:
        if self.writer is None or self.in_shard == self.shard_size:
            self._close_part()
            self.parts.append(self.root / f".part-{len(self.parts):05d}.tmp")
            # no dictionary for the image bytes: repeats are rare and the dictionary would only cost memory
            dictionary = [name for name in self.schema.names if name != "image"]
            self.writer = pq.ParquetWriter(self.parts[-1], self.schema, use_dictionary=dictionary)
            self.in_shard = 0
        self.rows.append({"image": {"bytes": jpeg, "path": f"{key}.jpg"}, "label": label, "key": key, **meta})
        self.in_shard += 1
        if len(self.rows) == HF_ROWS_PER_GROUP:
            self._flush()
        return f"{len(self.parts) - 1}:{key}"

    def _close_part(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()
            self.writer = None

    def close(self) -> list[str]:
        self._close_part()
        names = [f"train-{i:05d}-of-{len(self.parts):05d}.parquet" for i in range(len(self.parts))]
        for part, name in zip(self.parts, names, strict=True):
            part.rename(self.root / name)
        return [f"data/{name}" for name in names]


WRITERS = {
    "imagefolder": ImageFolderWriter,
    "webdataset": WebDatasetWriter,
    "insightface": InsightFaceWriter,
    "hf": HFWriter,
}

"""insightface's training set format: ``train.rec`` / ``train.idx`` / ``property``, as ``arcface_torch``'s
``MXFaceDataset`` (``recognition/arcface_torch/dataset.py``) reads it with ``mx.recordio.MXIndexedRecordIO``.

* ``train.rec`` is dmlc RecordIO: each record is the magic ``0xced7230a``, a little-endian word
  ``cflag << 29 | length`` and the payload, zero-padded to 4 bytes. A payload that holds the magic at a 4-byte
  aligned offset is split there into parts (cflag 1 first, 2 middle, 3 last), as dmlc's ``RecordIOWriter`` does, so
  a reader can always find record starts.
* Record ``i`` (1..N) is an image: ``IRHeader(flag=0, label=float(label), id=i, id2=0)`` packed as ``struct('IfQQ')``,
  then the JPEG bytes (``mx.recordio.pack``).
* Record 0 is the header: ``IRHeader(flag=2, label=0, id=0, id2=0)`` followed by the float32 label array
  ``(N + 1, N + 1)``. ``MXFaceDataset`` reads images ``1 .. label[0] - 1``; identity records (``label[0] ..
  label[1] - 1``, which old insightface tools read to sample by identity) would need the images grouped by identity,
  and none are written.
* ``train.idx`` lists ``index<TAB>byte offset`` of every record; ``property`` is ``num_classes,height,width``.
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = 0xCED7230A
IR_FORMAT = "IfQQ"  # mxnet.recordio._IR_FORMAT: flag, label, id, id2
_MAGIC_BYTES = struct.pack("<I", MAGIC)


def pack_header(flag: int, label: float, record_id: int, labels: tuple[float, ...] = ()) -> bytes:
    """``mx.recordio.pack``'s header: with ``labels`` the flag is their count and they follow as float32."""
    if labels:
        return struct.pack("<" + IR_FORMAT, len(labels), 0.0, record_id, 0) + struct.pack(f"<{len(labels)}f", *labels)
    return struct.pack("<" + IR_FORMAT, flag, label, record_id, 0)


def frame(payload: bytes) -> bytes:
    """One RecordIO record (dmlc ``RecordIOWriter::WriteRecord``): split at aligned magics, padded to 4 bytes."""
    if len(payload) >= 1 << 29:
        raise ValueError("a RecordIO record holds at most 2**29 - 1 bytes")
    parts, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            parts.append((1 if start == 0 else 2, payload[start:i]))
            start = i + 4
    parts.append((3 if start else 0, payload[start:]))
    out = b"".join(_MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(data)) + data for cflag, data in parts)
    return out + b"\0" * (-len(payload) % 4)


class RecordWriter:
    """Writes ``train.rec`` and ``train.idx``; record 0 is reserved and filled in by :meth:`close`."""

    HEADER_SIZE = len(pack_header(2, 0.0, 0, (0.0, 0.0)))

    def __init__(self, folder: Path):
        self.rec = open(folder / "train.rec", "wb")  # noqa: SIM115 - closed in close()
        self.idx = open(folder / "train.idx", "w")  # noqa: SIM115
        self.count = 0
        self._write(0, pack_header(2, 0.0, 0, (0.0, 0.0)))  # the placeholder header, same length as the real one

    def _write(self, index: int, payload: bytes) -> None:
        self.idx.write(f"{index}\t{self.rec.tell()}\n")
        self.rec.write(frame(payload))

    def add(self, label: int, jpeg: bytes) -> int:
        """Append one image; returns its record index (1, 2, ...)."""
        self.count += 1
        self._write(self.count, pack_header(0, float(label), self.count) + jpeg)
        return self.count

    def close(self) -> None:
        end = float(self.count + 1)
        self.rec.seek(0)
        self.rec.write(frame(pack_header(2, 0.0, 0, (end, end))))
        self.rec.close()
        self.idx.close()

"""What every benchmark script does last: write its JSON record and say where (``from record import write_record``;
the scripts run as ``python benchmarks/NAME.py``, so this folder is on the path)."""

from __future__ import annotations

import json
from pathlib import Path


def write_record(path: Path, record: dict) -> None:
    """Write ``record`` as indented JSON to ``path`` (making its folder) and print the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")

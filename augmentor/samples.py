"""The sample faces bundled with the package: the embedded default input of every command."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SAMPLES_LIST = SAMPLES_DIR / "identities.tsv"  # a `list` dataset: path<TAB>identity


def sample_paths() -> list[Path]:
    """The bundled sample images, sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.jpg"))

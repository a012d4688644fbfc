"""Shared fixtures: the committed LFW face images, one FaceMasker per session, and bad files made on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LFW_FIXTURES = sorted((FIXTURES / "lfw").glob("*.jpg"))


@pytest.fixture(scope="session")
def lfw_images() -> list[Path]:
    assert len(LFW_FIXTURES) >= 10, "tests/fixtures/lfw must hold the committed LFW images"
    return LFW_FIXTURES


@pytest.fixture(scope="session")
def masker():
    from augmentor.faces import FaceMasker

    return FaceMasker()


@pytest.fixture(scope="session")
def face_shards(tmp_path_factory, lfw_images) -> Path:
    """The LFW fixtures preprocessed once: 10 faces of 10 identities."""
    import pandas as pd

    from augmentor.preprocessing.preprocess import preprocess

    out = tmp_path_factory.mktemp("shards")
    listing = pd.DataFrame(
        {
            "image_id": [p.stem for p in lfw_images],
            "identity": [p.stem for p in lfw_images],
            "path": [str(p) for p in lfw_images],
        }
    )
    preprocess(listing, out, workers=1, progress=False)
    return out


@pytest.fixture
def tiny_config(face_shards):
    """configs/train/tiny.yaml on the fixture faces."""
    from augmentor.config import load_config
    from augmentor.training.loop import TrainConfig

    root = Path(__file__).resolve().parents[1]
    return load_config(
        TrainConfig, root / "configs" / "train" / "tiny.yaml", [f"data.path={face_shards}", "device=cpu"]
    )

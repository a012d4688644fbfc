"""Shared fixtures: the committed LFW face images, one FaceMasker per session, tiny cascades, and bad files made
on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LFW_FIXTURES = sorted((FIXTURES / "lfw").glob("*.jpg"))
LFW_PEOPLE = 10  # people in the lfw_root folder, two images each


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


@pytest.fixture(scope="session")
def tiny_widths() -> dict[int, int]:
    """Channel widths of a cascade small enough for CPU tests: 4 at every resolution (read-only)."""
    from augmentor.models import RESOLUTIONS

    return {r: 4 for r in (4, *RESOLUTIONS)}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tiny_widths) -> Path:
    """Two random cascades of :func:`tiny_widths`, saved once: ``plain/`` and ``noisy/`` (2 noise channels)."""
    import torch

    from augmentor.models import Cascade, CascadeConfig
    from augmentor.training.checkpoints import save_generator

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    save_generator(Cascade(CascadeConfig(widths=dict(tiny_widths))), root / "plain")
    save_generator(Cascade(CascadeConfig(widths=dict(tiny_widths), noise_channels=2)), root / "noisy")
    return root


@pytest.fixture
def tiny_config(face_shards):
    """configs/train/tiny.yaml on the fixture faces."""
    from augmentor.config import load_config
    from augmentor.training.loop import TrainConfig

    root = Path(__file__).resolve().parents[1]
    return load_config(
        TrainConfig, root / "configs" / "train" / "tiny.yaml", [f"data.path={face_shards}", "device=cpu"]
    )


@pytest.fixture(scope="session")
def lfw_root(tmp_path_factory, lfw_images) -> Path:
    """An LFW-style folder: each fixture person as _0001 (the image) and _0002 (mirrored, brighter), plus a
    faceless image that alignment must fall back on."""
    from PIL import Image, ImageOps

    root = tmp_path_factory.mktemp("lfw") / "images"
    for path in lfw_images[:LFW_PEOPLE]:
        name = path.stem.rsplit("_", 1)[0]
        (root / name).mkdir(parents=True)
        image = Image.open(path).convert("RGB")
        image.save(root / name / f"{name}_0001.jpg", quality=95)
        ImageOps.mirror(image).point(lambda v: min(255, int(v * 1.1))).save(root / name / f"{name}_0002.jpg")
    (root / "No_Face").mkdir()
    Image.new("RGB", (250, 250), (90, 120, 150)).save(root / "No_Face" / "No_Face_0001.jpg")
    return root

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

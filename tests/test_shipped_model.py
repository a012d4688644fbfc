"""The generator shipped in the package: it loads offline and paints real context, not noise.

The bundled samples are CelebA photos (the training source), so this checks that the shipped weights are a
trained model and are wired up correctly; docs/model-card.md has the held-out LFW figures.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from augmentor.evaluation.baselines import BASELINES, fill_all, mean_colour
from augmentor.evaluation.metrics import FaceDescriptor, face_perceptual, ssim, to_tensor
from augmentor.hallucinator import DEFAULT_WEIGHTS, Hallucinator
from augmentor.samples import sample_paths


@pytest.fixture(scope="module")
def sample_faces(masker):
    faces = [masker(p) for p in sample_paths()[:6]]
    faces = [f for f in faces if f.ok]
    assert len(faces) >= 4
    return (
        np.stack([f.masked for f in faces]),
        np.stack([f.mask for f in faces]),
        np.stack([f.aligned for f in faces]),
    )


@pytest.fixture(scope="module")
def shipped():
    assert (DEFAULT_WEIGHTS / "config.json").is_file(), f"the shipped weights are missing from {DEFAULT_WEIGHTS}"
    return Hallucinator.from_pretrained(device="cpu")


def test_shipped_files_are_small_and_documented():
    config = json.loads((DEFAULT_WEIGHTS / "config.json").read_text())
    assert config["format"] == "augmentor-cascade" and config["stored_dtype"] == "bfloat16"
    assert config["epochs_trained"] >= 1 and config["model_card"] == "docs/model-card.md"
    assert all(p.stat().st_size <= 16 * 2**20 for p in DEFAULT_WEIGHTS.iterdir())


def test_shipped_model_paints_context_around_the_exact_face(shipped, sample_faces):
    masked, mask, aligned = sample_faces
    out = shipped(masked, mask)
    assert out.shape == aligned.shape == (len(aligned), 128, 128, 3) and out.dtype == np.uint8
    inside = mask.astype(bool)
    assert np.array_equal(out[inside], aligned[inside])  # the face, bit for bit

    fill = fill_all(mean_colour, masked, mask)
    background = ~inside
    assert np.abs(out.astype(int) - fill)[background].mean() > 10  # not a flat fill ...
    spread = out[background].reshape(-1, 3).std(axis=0)
    assert (spread > 15).all()  # ... but varied context (hair, clothes, background)

    descriptor = FaceDescriptor()
    _, maps_true = descriptor.describe(to_tensor(aligned))
    _, maps_model = descriptor.describe(to_tensor(out))
    _, maps_fill = descriptor.describe(to_tensor(fill))
    model_distance = face_perceptual(maps_model, maps_true)
    fill_distance = face_perceptual(maps_fill, maps_true)
    assert model_distance.mean() < fill_distance.mean(), (model_distance, fill_distance)


def test_shipped_model_beats_the_classical_fills_on_ssim(shipped, sample_faces):
    """The SSIM fine-tune's point (docs/model-card.md): closer in structure than cv2's inpainting."""
    masked, mask, aligned = sample_faces
    model = ssim(shipped(masked, mask), aligned).mean()
    fills = {name: ssim(fill_all(fill, masked, mask), aligned).mean() for name, fill in BASELINES.items()}
    assert set(fills) >= {"cv2 Navier-Stokes", "cv2 Telea", "mean-colour fill"}
    assert model > max(fills.values()) + 0.01, (model, fills)


def test_shipped_model_is_deterministic(shipped, sample_faces):
    masked, mask, _ = sample_faces
    assert np.array_equal(shipped(masked[:2], mask[:2]), shipped(masked[:2], mask[:2]))
    assert torch.get_default_dtype() == torch.float32  # loading bf16 weights left the global default alone

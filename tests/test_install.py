"""The install is complete: the pretrained files load offline, and the optional MTCNN detector runs."""

from __future__ import annotations

import importlib

import pytest

from augmentor.resources import DLIB_MODEL_FILES, MissingModelFileError, dlib_model_path


def test_face_recognition_models_imports_and_ships_every_file():
    module = importlib.import_module("face_recognition_models")  # its __init__ needs pkg_resources (setuptools<81)
    assert module.pose_predictor_model_location().endswith("shape_predictor_68_face_landmarks.dat")
    for name in DLIB_MODEL_FILES:
        path = dlib_model_path(name)
        assert path.is_file() and path.stat().st_size > 50_000, name


def test_unknown_and_missing_model_files(monkeypatch):
    with pytest.raises(ValueError, match="unknown dlib model file"):
        dlib_model_path("vgg_face.dat")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingModelFileError, match="pip install face-recognition-models"):
        dlib_model_path("shape_predictor_68_face_landmarks.dat")


def test_missing_landmark_model_is_a_clear_error(tmp_path):
    from augmentor.faces.landmarks import LandmarkPredictor

    with pytest.raises(MissingModelFileError, match="not found"):
        LandmarkPredictor(tmp_path / "nope.dat")


def test_mtcnn_detector_finds_faces(lfw_images):
    pytest.importorskip("facenet_pytorch", reason="optional: make install adds it with --no-deps")
    from augmentor.faces import FaceMasker, MaskingConfig, Status

    masker = FaceMasker(MaskingConfig(detector="mtcnn"))
    for path in lfw_images[:3]:
        face = masker(path)
        assert face.status is Status.OK, face.reason
        assert 0.08 < face.mask.mean() < 0.4


def test_unknown_detector_name():
    from augmentor.faces.detect import make_detector

    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("cnn")

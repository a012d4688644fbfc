"""Locate pretrained model files shipped by third-party packages, without downloading anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: Files shipped by the ``face-recognition-models`` package (``face_recognition_models/models/``).
DLIB_MODEL_FILES = (
    "shape_predictor_68_face_landmarks.dat",
    "shape_predictor_5_face_landmarks.dat",
    "mmod_human_face_detector.dat",
    "dlib_face_recognition_resnet_model_v1.dat",
)


class MissingModelFileError(FileNotFoundError):
    """A pretrained model file is not on disk; the message says how to supply it."""


def dlib_model_path(name: str) -> Path:
    """Return the path of a dlib model file from the ``face-recognition-models`` package.

    The package directory is found through its import spec, so its ``__init__`` (which imports
    ``pkg_resources``) is not executed here.

    Args:
        name: One of :data:`DLIB_MODEL_FILES`.

    Raises:
        ValueError: ``name`` is not a known file.
        MissingModelFileError: the package or the file is not installed.
    """
    if name not in DLIB_MODEL_FILES:
        raise ValueError(f"unknown dlib model file {name!r}; expected one of {', '.join(DLIB_MODEL_FILES)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelFileError(
            f"{name} comes with the 'face-recognition-models' package, which is not installed. "
            "Install it with `pip install face-recognition-models` (or run `make install`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise MissingModelFileError(
            f"{path} is missing. Reinstall 'face-recognition-models' "
            "(`pip install --force-reinstall face-recognition-models`)."
        )
    return path

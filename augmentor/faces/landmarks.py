"""68-point landmarks from dlib's shape predictor (shipped by ``face-recognition-models``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augmentor.faces.detect import Box
from augmentor.resources import MissingModelFileError, dlib_model_path

# Index ranges of the iBUG 300-W 68-point scheme, in image terms (the subject's right eye is on the image left).
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)


class LandmarkPredictor:
    """dlib's 68-point shape predictor as a numpy-in, numpy-out callable."""

    def __init__(self, path: str | Path | None = None):
        import dlib

        path = Path(path) if path is not None else dlib_model_path("shape_predictor_68_face_landmarks.dat")
        if not path.is_file():
            raise MissingModelFileError(f"landmark model {path} not found; pass the path of a 68-point dlib model")
        self._predictor = dlib.shape_predictor(str(path))

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Landmarks of the face in ``box``: ``[68, 2]`` float32 (x, y) in ``image`` pixels."""
        import dlib

        shape = self._predictor(image, dlib.rectangle(*box))
        if shape.num_parts != 68:
            raise ValueError(f"expected a 68-point shape predictor, got {shape.num_parts} points")
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the image-left and image-right eyes, each ``[2]`` (x, y)."""
    return landmarks[LEFT_EYE].mean(axis=0), landmarks[RIGHT_EYE].mean(axis=0)

"""The input side shared by every external recogniser: aligned crops -> model-sized, normalised chips.

With ``align=five-point`` a crop with landmarks becomes an arcface-template chip (:mod:`recognition.five_point`);
a centre-crop fallback (no landmarks) is mapped by our template's eye positions onto the arcface eyes, so its framing
is close to the aligned one. With ``align=crop`` the whole aligned crop is resized.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from recognition.data import resize_crop
from recognition.embedders.spec import InputOptions, ModelSpec
from recognition.five_point import align_five_point, template, umeyama


def fallback_matrix(crop_size: int, size: int) -> np.ndarray:
    """``[2, 3]``: our template's eye centres in a ``crop_size`` crop onto the arcface eyes at ``size`` px."""
    from augmentor.faces.align import Template

    ours = Template().scaled(crop_size)
    return umeyama(np.array([ours.left_eye, ours.right_eye]), template(size)[:2])


def make_chips(images: np.ndarray, landmarks: list[np.ndarray | None], inputs: InputOptions) -> np.ndarray:
    """``[B, S, S, 3]`` uint8 model-sized chips of ``[B, H, W, 3]`` uint8 aligned crops."""
    import cv2

    size = int(inputs.size)
    chips = np.empty((len(images), size, size, 3), np.uint8)
    for i, (image, points) in enumerate(zip(images, landmarks, strict=True)):
        if inputs.align == "crop":
            chips[i] = resize_crop(np.ascontiguousarray(image), size)
        elif points is not None:
            chips[i] = align_five_point(image, points, size)
        else:
            matrix = fallback_matrix(image.shape[0], size)
            chips[i] = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), borderValue=0)
    return chips


def normalise(chips: np.ndarray, inputs: InputOptions) -> np.ndarray:
    """``[B, 3, S, S]`` float32 ``(pixel - mean) / std`` of ``[B, S, S, 3]`` uint8 RGB chips, in the model's order."""
    x = chips[..., ::-1] if inputs.channels == "bgr" else chips
    x = (x.astype(np.float32) - np.float32(inputs.mean)) / np.float32(inputs.std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def file_fingerprint(path: Path, spec: ModelSpec, inputs: InputOptions) -> str:
    """A short hash of the model file (path, size, modification time) and the input settings."""
    stat = path.stat()
    text = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, spec.kind, asdict(inputs)])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class ChipEmbedder:
    """Base of the external recognisers: ``__call__(crops, landmarks, flip) -> [B, D]`` as verify-lfw calls it.

    A subclass sets ``inputs`` (filled), ``fingerprint`` and ``config`` and implements :meth:`forward`.
    """

    inputs: InputOptions
    fingerprint: str
    config: dict

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``[B, 3, S, S]`` float32 -> ``[B, D]`` float32 features."""
        raise NotImplementedError

    def describe(self, spec: ModelSpec, path: Path) -> dict:
        """The report's ``architecture`` entry."""
        return {"architecture": {"kind": spec.kind, "source": spec.source, "file": str(path), **asdict(self.inputs)}}

    def __call__(self, images: np.ndarray, landmarks: list[np.ndarray | None], flip: bool) -> np.ndarray:
        x = normalise(make_chips(images, landmarks, self.inputs), self.inputs)
        features = self.forward(x)
        if flip:
            features = features + self.forward(np.ascontiguousarray(x[..., ::-1]))
        return np.asarray(features, np.float32)

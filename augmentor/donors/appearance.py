"""Appearance descriptors of faces for the donor search: dlib-ResNet 128-D descriptors of dlib's own face chips,
cut from the masked aligned crops so that only face pixels count. Loads torch and the network when first used."""

from __future__ import annotations

import numpy as np

BATCH = 64  # faces per forward pass


class AppearanceDescriber:
    """``[N, 128]`` float32 descriptors of ``[N, S, S, 3]`` aligned crops, their masks and ``[N, 68, 2]`` landmarks.

    Args:
        weights: dlib's ``.dat`` or a pack's ``identity.safetensors``; None: the installed ``.dat``.
    """

    def __init__(self, weights: str | None = None):
        self.weights = weights
        self._descriptor = None

    def __call__(self, aligned: np.ndarray, masks: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        import torch

        from augmentor.evaluation.metrics import FaceDescriptor, to_tensor
        from augmentor.identity.network import face_chip_from_aligned
        from augmentor.precision import autocast, resolve_precision

        if self._descriptor is None:
            self._descriptor = FaceDescriptor(self.weights)
        precision = resolve_precision("auto", "cpu")
        out = np.zeros((len(aligned), 128), np.float32)
        for start in range(0, len(aligned), BATCH):
            part = slice(start, start + BATCH)
            masked = aligned[part] * (masks[part] > 0)[..., None].astype(np.uint8)
            points = torch.from_numpy(np.ascontiguousarray(landmarks[part], np.float32))
            with torch.inference_mode(), autocast(precision, "cpu"):
                chips = face_chip_from_aligned(to_tensor(masked).float() / 255.0, points).clamp(0, 1)
                out[part] = self._descriptor.net(chips).float().numpy()
        return out

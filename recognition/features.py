"""Features for verify-lfw: the embedders (a fine-tuned checkpoint, or the dlib face ResNet port as a baseline) and
the per-model feature cache (``OUT/features/<model>.npz``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from augmentor.identity.network import CHIP_SIZE
from augmentor.layout import CONFIG_FILE, MODEL_FILE
from recognition.data import resize_crop

log = logging.getLogger(__name__)

DLIB_MODEL = "dlib"  # --model dlib: the dlib face ResNet port as a fixed feature extractor (a baseline)


@dataclass
class AlignedImages:
    """The aligned crops of every image the pairs name, in ``names`` order."""

    names: list[str]  # relative paths, Name/Name_0001.jpg
    images: np.ndarray  # [N, 128, 128, 3] uint8
    landmarks: list[np.ndarray | None]  # [68, 2] aligned landmarks, None for a centre-crop fallback
    fallbacks: dict[str, str] = field(default_factory=dict)  # name -> why alignment failed
    masks: np.ndarray | None = None  # [N, 128, 128] uint8 face masks (1 = face, 0 = background; 0 for fallbacks)

    def index(self, names: tuple[str, ...]) -> np.ndarray:
        where = {n: i for i, n in enumerate(self.names)}
        return np.array([where[n] for n in names], np.int64)


class CheckpointEmbedder:
    """The embedding (``feat_extract`` output) of a fine-tuned recognition checkpoint."""

    def __init__(self, directory: Path, device: torch.device):
        from recognition.backbone import load_model

        self.net, self.config = load_model(directory, device)
        self.device = device
        self.image_size = self.net.config.image_size
        weights = directory / MODEL_FILE
        stat = weights.stat()
        text = (directory / CONFIG_FILE).read_text()
        self.fingerprint = hashlib.sha1(f"{text}{stat.st_size}{stat.st_mtime_ns}".encode()).hexdigest()[:16]

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, landmarks: list[np.ndarray | None], flip: bool) -> np.ndarray:
        crops = np.stack([resize_crop(im, self.image_size) for im in images])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device)  # [B, 3, S, S] uint8
        feats = self.net(x)
        if flip:
            feats = feats + self.net(x.flip(-1))
        return feats.float().cpu().numpy()


class DlibEmbedder:
    """The dlib face ResNet port, unchanged: 128-D descriptors of dlib face chips cut from the aligned crop.

    With landmarks the chip is dlib's own (``face_chip_from_aligned``, 150 px, padding 0.25); a centre-crop fallback
    is resized whole to 150 px.
    """

    fingerprint = "dlib-v1"

    def __init__(self, device: torch.device):
        from augmentor.identity.network import DlibResNet

        self.config: dict = {}
        self.net = DlibResNet.from_dat().eval().requires_grad_(False).to(device)
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, landmarks: list[np.ndarray | None], flip: bool) -> np.ndarray:
        from augmentor.identity.network import face_chip_from_aligned

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().to(self.device) / 255.0
        chips = F.interpolate(x, size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False, antialias=True)
        have = [i for i, lm in enumerate(landmarks) if lm is not None]
        if have:
            points = torch.from_numpy(np.stack([landmarks[i] for i in have])).to(self.device)
            chips[have] = face_chip_from_aligned(x[have], points).clamp(0, 1)
        feats = self.net(chips)
        if flip:
            feats = feats + self.net(chips.flip(-1))
        return feats.float().cpu().numpy()


def load_embedder(spec: str | Path, device: torch.device) -> CheckpointEmbedder | DlibEmbedder:
    """``dlib`` or a checkpoint folder (or a finetune run folder, whose ``checkpoint/`` is used)."""
    if str(spec) == DLIB_MODEL:
        return DlibEmbedder(device)
    path = Path(spec)
    if not (path / CONFIG_FILE).is_file() and (path / "checkpoint" / CONFIG_FILE).is_file():
        path = path / "checkpoint"
    return CheckpointEmbedder(path, device)


def embed_all(embedder, aligned: AlignedImages, cache: Path, settings, context_key: str = "") -> np.ndarray:
    """``[N, D]`` features of every aligned image, from ``cache`` when it was made by the same model and inputs.

    ``settings`` is a :class:`recognition.verify.VerifySettings` (``flip``, ``batch_size``, ``progress``);
    ``context_key`` identifies re-contexted images (:class:`recognition.contexts.ContextImages.key`).
    """
    key = hashlib.sha1(
        json.dumps(
            [embedder.fingerprint, settings.flip, aligned.names, sorted(aligned.fallbacks), context_key]
        ).encode()
    ).hexdigest()
    if cache.is_file():
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                log.info("features from %s", cache)
                return stored["features"]
    from tqdm import tqdm

    chunks = []
    step = settings.batch_size
    for start in tqdm(range(0, len(aligned.names), step), desc="features", unit="batch", disable=not settings.progress):
        stop = start + step
        chunks.append(embedder(aligned.images[start:stop], aligned.landmarks[start:stop], settings.flip))
    features = np.concatenate(chunks)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}")
    with tmp.open("wb") as fh:
        np.savez(fh, key=np.array(key), features=features)
    tmp.replace(cache)
    return features

"""``augmentor evaluate``: the paper's Table 1 on LFW for our models and classical baselines, in one run."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor.evaluation.baselines import BASELINES, fill_all
from augmentor.evaluation.metrics import (
    DLIB_THRESHOLD,
    FaceDescriptor,
    ResNet50Features,
    face_perceptual,
    feature_fid,
    load_inception_fid,
    load_lpips,
    load_pieapp,
    pearson,
    ssim,
    to_tensor,
)
from augmentor.preprocessing.preprocess import preprocess
from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """How an evaluation run samples, computes and reports."""

    limit: int | None = None  # evaluate N images drawn with `seed` (None: all)
    seed: int = 0  # image selection seed
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None  # masking processes (default: all cores)
    match_features: str = "dlib"  # dlib, or the path of a local torchvision ResNet-50 state dict
    inception_weights: str | None = None  # FID Inception weights file (pt_inception-2015-12-05-6726825d.pth)
    figure_rows: int = 8  # images in the comparison figure


def select(table: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A deterministic sample of ``limit`` rows (all rows if None), in listing order."""
    if limit is None or limit >= len(table):
        return table
    index = np.sort(np.random.default_rng(seed).choice(len(table), size=limit, replace=False))
    return table.iloc[index]


def _batched(fn, images: np.ndarray, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [fn(to_tensor(images[i : i + batch_size])).float().cpu() for i in range(0, len(images), batch_size)]
    )


class Scorer:
    """Scores sets of images against the aligned originals."""

    def __init__(self, originals: np.ndarray, settings: EvalSettings, device: torch.device):
        self.originals = originals
        self.settings = settings
        self.device = device
        self.dlib = FaceDescriptor().to(device)
        self.match_net = (
            self.dlib if settings.match_features == "dlib" else ResNet50Features(settings.match_features).to(device)
        )
        self.lpips, self.lpips_note = load_lpips(device)
        self.pieapp, self.pieapp_note = load_pieapp(device)
        self.inception, self.inception_note = load_inception_fid(settings.inception_weights, device)
        self.dlib_orig, self.maps_orig = self._describe(originals)
        self.match_orig = (
            self.dlib_orig if self.match_net is self.dlib else _batched(self.match_net, originals, settings.batch_size)
        )

    def _describe(self, images: np.ndarray) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """dlib descriptors ``[N, 128]`` and per-batch feature maps, in one pass over the images."""
        bs, descriptors, maps = self.settings.batch_size, [], []
        for i in range(0, len(images), bs):
            emb, feats = self.dlib.describe(to_tensor(images[i : i + bs]))
            descriptors.append(emb.float().cpu())
            maps.append(feats)
        return torch.cat(descriptors), maps

    @property
    def notes(self) -> dict[str, str]:
        return {"LPIPS": self.lpips_note, "PieAPP": self.pieapp_note, "FID-Inception": self.inception_note}

    def per_image(self, images: np.ndarray) -> dict[str, np.ndarray]:
        dlib_feats, maps = self._describe(images)
        match_feats = (
            dlib_feats if self.match_net is self.dlib else _batched(self.match_net, images, self.settings.batch_size)
        )
        distance = (dlib_feats - self.dlib_orig).norm(dim=1)
        perceptual = torch.cat([face_perceptual(a, b).cpu() for a, b in zip(maps, self.maps_orig)])
        scores = {
            "match": pearson(match_feats, self.match_orig).numpy(),
            "dlib_l2": distance.numpy(),
            "same_person": (distance < DLIB_THRESHOLD).numpy(),
            "ssim": ssim(images, self.originals),
            "face_perceptual": perceptual.numpy(),
        }
        for name, net in (("lpips", self.lpips), ("pieapp", self.pieapp)):
            if net is not None:
                scores[name] = self._pairwise(net, images)
        self._last_dlib = dlib_feats
        return scores

    @torch.inference_mode()
    def _pairwise(self, net, images: np.ndarray) -> np.ndarray:
        bs, out = self.settings.batch_size, []
        for i in range(0, len(images), bs):
            a = to_tensor(images[i : i + bs]).to(self.device).float() / 255.0
            b = to_tensor(self.originals[i : i + bs]).to(self.device).float() / 255.0
            value = net(a * 2 - 1, b * 2 - 1) if net is self.lpips else net(a, b)
            out.append(value.reshape(len(a)).float().cpu())
        return torch.cat(out).numpy()

    def set_level(self, images: np.ndarray) -> dict[str, float]:
        fid, kid, kid_std = feature_fid(self.dlib_orig, self._last_dlib)
        result = {"fid_face": fid, "kid_face": kid, "kid_face_std": kid_std}
        if self.inception is not None:
            self.inception.reset()
            for i in range(0, len(images), self.settings.batch_size):
                self.inception.update(
                    to_tensor(self.originals[i : i + self.settings.batch_size]).to(self.device), real=True
                )
                self.inception.update(to_tensor(images[i : i + self.settings.batch_size]).to(self.device), real=False)
            result["fid_inception"] = float(self.inception.compute())
        return result


def load_masked(shard_dir: Path) -> pd.DataFrame:
    table = read_shards(shard_dir, columns=["image_id", "identity", "aligned", "mask"], status="ok").to_pandas()
    return table.sort_values("image_id", kind="stable").reset_index(drop=True)


def evaluate(table: pd.DataFrame, out_dir: str | Path, models: dict[str, str | Path], settings: EvalSettings) -> dict:
    """Mask, hallucinate and score; write table.md, metrics.json, per_image.parquet and figures to ``out_dir``.

    Args:
        table: Dataset listing (``image_id``, ``identity``, ``path``).
        out_dir: Output folder (masking shards are kept in ``out_dir/masked`` and reused by a rerun).
        models: ``{label: checkpoint folder}``.
        settings: Sampling and metric settings.

    Returns:
        The ``metrics.json`` content.
    """
    from tqdm import tqdm

    from augmentor.evaluation.report import write_reports
    from augmentor.hallucinator import Hallucinator
    from augmentor.precision import pick_device

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    chosen = select(table, settings.limit, settings.seed)
    masking = preprocess(chosen[["image_id", "identity", "path"]], out_dir / "masked", workers=settings.workers)
    faces = load_masked(out_dir / "masked")
    faces = faces[faces["image_id"].isin(set(chosen["image_id"]))].reset_index(drop=True)
    if len(faces) < 2:
        raise ValueError(f"only {len(faces)} faces could be masked; need at least 2")
    originals = np.stack([decode_png(b) for b in faces["aligned"]])  # [N, S, S, 3]
    masks = np.stack([decode_mask(b) for b in faces["mask"]])  # [N, S, S]
    masked = originals * masks[..., None]

    outputs: dict[str, np.ndarray] = {}
    for name, fill in tqdm(BASELINES.items(), desc="baselines", unit="method"):
        outputs[name] = fill_all(fill, masked, masks)
    for name, path in models.items():
        hal = Hallucinator.from_pretrained(path, device=str(device), batch_size=settings.batch_size)
        outputs[name] = np.concatenate(
            [
                hal(masked[i : i + 256], masks[i : i + 256])
                for i in tqdm(range(0, len(masked), 256), desc=name, unit="batch")
            ]
        )

    scorer = Scorer(originals, settings, device)
    rows, summary = [], {}
    for name, images in tqdm(outputs.items(), desc="scoring", unit="method"):
        scores = scorer.per_image(images)
        summary[name] = {f"mean_{k}": float(np.mean(v)) for k, v in scores.items()}
        summary[name].update(scorer.set_level(images))
        rows.append(pd.DataFrame({"method": name, "image_id": faces["image_id"], **scores}))
    per_image = pd.concat(rows, ignore_index=True)
    per_image.to_parquet(out_dir / "per_image.parquet", index=False)
    report = {
        "settings": asdict(settings),
        "device": str(device),
        "images_requested": len(chosen),
        "images_scored": len(faces),
        "masking": masking.status_counts,
        "match_features": scorer.match_net.name,
        "models": {k: str(v) for k, v in models.items()},
        "unavailable": {k: v for k, v in scorer.notes.items() if v.startswith("not available")},
        "methods": summary,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    write_reports(report, per_image, masked, outputs, originals, out_dir, settings.figure_rows)
    return report

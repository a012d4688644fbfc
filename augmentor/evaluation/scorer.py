"""Scores sets of hallucinated images: per image against the aligned originals, per set against a disjoint real set."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from augmentor.evaluation.metrics import (
    FaceDescriptor,
    ResNet50Features,
    face_perceptual,
    frechet_distance,
    kid_from_kernels,
    load_inception_fid,
    load_lpips,
    load_pieapp,
    pearson,
    polynomial_kernel,
    ssim_scores,
    to_tensor,
)
from augmentor.identity.network import DLIB_MATCH_THRESHOLD

log = logging.getLogger(__name__)

# Per-image metrics and whether higher is better (the direction of every CI and win share).
PER_IMAGE_METRICS = {
    "ssim": True,
    "ssim_background": True,
    "match": True,
    "face_perceptual": False,
    "dlib_l2": False,
    "chip_l2": False,
    "same_person": True,
    "lpips": False,
    "pieapp": False,
}


def _batched(fn, images: np.ndarray, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [fn(to_tensor(images[i : i + batch_size])).float().cpu() for i in range(0, len(images), batch_size)]
    )


@dataclass(frozen=True)
class SetFeatures:
    """One dlib pass over a set of images: what its per-image and its set-level scores both need.

    Made by :meth:`Scorer.features` and handed back to :meth:`Scorer.per_image` and :meth:`Scorer.set_level`, so a
    set is described once and never by mistake with another set's features.
    """

    descriptors: torch.Tensor  # [N, 128] float32 on the CPU: dlib-ResNet descriptors of the whole images
    maps: list[dict[str, torch.Tensor]]  # per batch: the feature maps of the face-perceptual distance

    def __len__(self) -> int:
        return len(self.descriptors)

    def as_numpy(self) -> np.ndarray:
        """The descriptors as float64 ``[N, 128]`` (what FID/KID take)."""
        return self.descriptors.numpy().astype(np.float64)


def _checked(features: SetFeatures, images: np.ndarray) -> SetFeatures:
    if len(features) != len(images):
        raise ValueError(f"features of {len(features)} images passed with {len(images)} images")
    return features


class Scorer:
    """Scores sets of images against the aligned originals and, set-level, against a disjoint real set.

    Args:
        originals: uint8 ``[N, S, S, 3]`` aligned originals, paired with every scored set.
        settings: An ``EvalSettings`` (batch size, match features, Inception weights).
        device: Where the scoring networks run (always fp32).
        masks: ``[N, S, S]`` face masks; without them the background SSIM is NaN.
        landmarks: ``[N, 68, 2]`` aligned landmarks; with them and ``settings.chip_identity``, ``chip_l2`` and
            ``same_person`` are measured on dlib's own face chips, as verify-lfw cuts them.
        reference: uint8 ``[M, S, S, 3]`` real images disjoint from ``originals``: FID/KID compare against them.
            None compares against ``originals`` themselves (paired; restates the descriptor distance).
    """

    def __init__(
        self,
        originals: np.ndarray,
        settings,
        device: torch.device,
        masks: np.ndarray | None = None,
        landmarks: np.ndarray | None = None,
        reference: np.ndarray | None = None,
    ):
        self.originals = originals
        self.masks = masks
        self.landmarks = landmarks
        self.reference = reference if reference is not None else originals
        self.settings = settings
        self.device = device
        self.dlib = FaceDescriptor().to(device)
        self.match_net = (
            self.dlib if settings.match_features == "dlib" else ResNet50Features(settings.match_features).to(device)
        )
        self.lpips, self.lpips_note = load_lpips(device)
        self.pieapp, self.pieapp_note = load_pieapp(device)
        self.inception, self.inception_note = load_inception_fid(settings.inception_weights, device)
        self.original = self.features(originals)
        self.chips = settings.chip_identity and landmarks is not None
        self.chips_orig = self._chip_descriptors(originals) if self.chips else None
        self.match_orig = (
            self.original.descriptors
            if self.match_net is self.dlib
            else _batched(self.match_net, originals, settings.batch_size)
        )
        self.reference_feats = (self.original if reference is None else self.features(reference)).as_numpy()
        self.k_rr = polynomial_kernel(self.reference_feats, self.reference_feats)
        num = min(len(self.reference_feats), len(originals))
        if num < 2 * FaceDescriptor.num_features:
            log.warning(
                "FID-face/KID-face on %d images: under 2x the %d-D feature dimension the covariance is poorly "
                "estimated and FID is biased upward; compare with the real-vs-real floor",
                num,
                FaceDescriptor.num_features,
            )

    def features(self, images: np.ndarray) -> SetFeatures:
        """dlib descriptors and perceptual feature maps of ``images``, in one pass over them."""
        bs, descriptors, maps = self.settings.batch_size, [], []
        for i in range(0, len(images), bs):
            emb, feats = self.dlib.describe(to_tensor(images[i : i + bs]))
            descriptors.append(emb.float().cpu())
            maps.append(feats)
        return SetFeatures(torch.cat(descriptors), maps)

    def describe(self, images: np.ndarray) -> np.ndarray:
        """dlib-ResNet descriptors ``[N, 128]`` of any images (e.g. a copy's context alone)."""
        return self.features(images).descriptors.numpy()

    def _chip_descriptors(self, images: np.ndarray) -> torch.Tensor:
        bs = self.settings.batch_size
        return torch.cat(
            [
                self.dlib.chip_descriptors(to_tensor(images[i : i + bs]), torch.from_numpy(self.landmarks[i : i + bs]))
                .float()
                .cpu()
                for i in range(0, len(images), bs)
            ]
        )

    @property
    def notes(self) -> dict[str, str]:
        return {"LPIPS": self.lpips_note, "PieAPP": self.pieapp_note, "FID-Inception": self.inception_note}

    def per_image(self, images: np.ndarray, features: SetFeatures | None = None) -> dict[str, np.ndarray]:
        """Every per-image metric of :data:`PER_IMAGE_METRICS` that can be measured here: ``{name: [N]}``.

        Args:
            images: uint8 ``[N, S, S, 3]``, paired with the originals.
            features: ``self.features(images)`` if the caller already has them (saves the dlib pass).
        """
        features = self.features(images) if features is None else _checked(features, images)
        dlib_feats = features.descriptors
        match_feats = (
            dlib_feats if self.match_net is self.dlib else _batched(self.match_net, images, self.settings.batch_size)
        )
        perceptual = torch.cat([face_perceptual(a, b).cpu() for a, b in zip(features.maps, self.original.maps)])
        whole, background = ssim_scores(images, self.originals, self.masks)
        scores = {
            "match": pearson(match_feats, self.match_orig).numpy(),
            "dlib_l2": (dlib_feats - self.original.descriptors).norm(dim=1).numpy(),
            "ssim": whole,
            "ssim_background": background,
            "face_perceptual": perceptual.numpy(),
        }
        if self.chips:
            distance = (self._chip_descriptors(images) - self.chips_orig).norm(dim=1)
            scores["chip_l2"] = distance.numpy()
            scores["same_person"] = (distance < DLIB_MATCH_THRESHOLD).numpy()
        for name, net in (("lpips", self.lpips), ("pieapp", self.pieapp)):
            if net is not None:
                scores[name] = self._pairwise(net, images)
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

    def kernels(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """KID kernel matrices ``(K_ff, K_rf)`` of a set's features against the reference set."""
        return polynomial_kernel(feats, feats), polynomial_kernel(self.reference_feats, feats)

    def set_level(self, images: np.ndarray, features: SetFeatures | None = None) -> dict[str, float]:
        """FID-face and KID-face (dlib 128-D, whole sets) and, with its weights, Inception FID, against the
        reference set. ``features``: ``self.features(images)``, if already computed."""
        feats = (self.features(images) if features is None else _checked(features, images)).as_numpy()
        k_ff, k_rf = self.kernels(feats)
        result = {
            "fid_face": frechet_distance(self.reference_feats, feats),
            "kid_face": kid_from_kernels(self.k_rr, k_ff, k_rf),
        }
        if self.inception is not None:
            bs = self.settings.batch_size
            self.inception.reset()
            for i in range(0, len(self.reference), bs):
                self.inception.update(to_tensor(self.reference[i : i + bs]).to(self.device), real=True)
            for i in range(0, len(images), bs):
                self.inception.update(to_tensor(images[i : i + bs]).to(self.device), real=False)
            result["fid_inception"] = float(self.inception.compute())
        return result

"""The paper's losses (eq. 1-6) as small pure functions, the frozen feature networks they need, and one
combiner per side that returns ``(total, logs)``. No loss calls ``.backward()``.

Substitutions, since the paper's networks cannot be had offline:
- perceptual ``face`` (default): L1 distance between intermediate feature maps of our dlib-ResNet port,
  in place of LPIPS. ``lpips`` uses the real LPIPS (AlexNet) where its backbone weights are present.
- identity: squared distance between 128-D dlib-ResNet embeddings, in place of VGG-Face fc7.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from augmentor.errors import InputError
from augmentor.identity.network import CHIP_SIZE
from augmentor.identity.network import PERCEPTUAL_LAYERS as FACE_PERCEPTUAL_LAYERS
from augmentor.resources import MissingModelFileError

log = logging.getLogger(__name__)


@dataclass
class LossConfig:
    """Loss weights (paper eq. 6) and kinds. A weight of 0 skips that term."""

    pixel: float = 1.0  # L1 reconstruction weight
    perceptual: float = 1.0  # lambda_1, perceptual loss weight (blocks >= perceptual_from)
    adversarial: float = 0.1  # lambda_2, adversarial generator loss weight
    adversarial_kind: Literal["lsgan", "hinge", "logistic"] = "lsgan"  # on raw scores; logistic = non-saturating
    adversarial_from: int = 8  # smallest block resolution with a discriminator (fewer blocks: faster steps)
    r1: float = 0.0  # R1 penalty weight gamma (Mescheder et al. 2018) on the discriminators' real inputs
    r1_every: int = 4  # lazy R1: apply it every this many steps, scaled up to match (StyleGAN2)
    diffaugment: str = ""  # DiffAugment policy for the discriminators' inputs, e.g. "color,translation,cutout"
    diversity: float = 0.0  # weight of the bounded mode-seeking term; needs model.noise_channels > 0
    diversity_bound: float = 0.1  # the output/noise distance ratio beyond which diversity earns nothing more
    identity: float = 10.0  # lambda_3, identity loss weight (blocks >= identity_from)
    tv: float = 1e-6  # lambda_4, total variation weight (eq. 5)
    ssim: float = 0.0  # weight of 1 - SSIM (not in the paper; needs torchmetrics), blocks >= ssim_from
    ssim_from: int = 64  # smallest block resolution with an SSIM loss (the 11x11 window needs >= 16 px)
    perceptual_kind: Literal["face", "lpips"] = "face"  # face: dlib-ResNet features (offline); lpips: AlexNet LPIPS
    perceptual_from: int = 32  # smallest block resolution with a perceptual loss
    identity_from: int = 32  # smallest block resolution with an identity loss
    real_label: float = 0.9  # lsgan only: one-sided label smoothing of the discriminators' real target
    lsgan_target: float = 1.0  # c in the LSGAN generator loss
    lpips_random: bool = False  # lpips only: random backbone (pnet_rand=True), for tests without weights
    identity_weights: str | None = None  # dlib's .dat or a pack's identity.safetensors; None: the installed .dat

    def __post_init__(self) -> None:
        if self.adversarial_kind not in ("lsgan", "hinge", "logistic"):
            raise InputError(f"adversarial_kind must be lsgan, hinge or logistic, got {self.adversarial_kind!r}")
        if self.r1_every < 1:
            raise InputError("r1_every must be >= 1")


# --- pure functions -----------------------------------------------------------------------------------------------


def g_pixel_l1(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (eq. 1)."""
    return (fake - real).abs().mean()


def g_total_variation(fake: torch.Tensor) -> torch.Tensor:
    """Total variation (eq. 5): squared differences between neighbouring pixels, summed per image, mean over batch."""
    dx = fake[..., :, 1:] - fake[..., :, :-1]
    dy = fake[..., 1:, :] - fake[..., :-1, :]
    return (dx.pow(2).sum() + dy.pow(2).sum()) / fake.shape[0]


def g_ssim(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` of images in [-1, 1], averaged over the batch.

    The same SSIM as the evaluation's (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, on [0, 1]), through
    torchmetrics, which is differentiable.
    """
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError as exc:
        raise ImportError("the ssim loss needs torchmetrics: pip install torchmetrics") from exc

    value = structural_similarity_index_measure(
        (fake.float() + 1) / 2,
        (real.float() + 1) / 2,
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
    )
    return 1 - value


def g_lsgan(d_fake: torch.Tensor, target: float = 1.0) -> torch.Tensor:
    """Least-squares generator loss (Mao et al.) on raw scores: ``mean((D(G(x)) - c)^2)`` with c = 1."""
    return (d_fake - target).pow(2).mean()


def d_lsgan(d_real: torch.Tensor, d_fake: torch.Tensor, real_label: float = 0.9) -> torch.Tensor:
    """Least-squares discriminator loss on raw scores (targets ``real_label`` and 0)."""
    return 0.5 * ((d_real - real_label).pow(2).mean() + d_fake.pow(2).mean())


def g_hinge(d_fake: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss (Lim & Ye 2017; SAGAN): ``-mean(D(G(x)))``."""
    return -d_fake.mean()


def d_hinge(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(x))))``."""
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


def g_logistic(d_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic generator loss (Goodfellow et al. 2014): ``mean(softplus(-D(G(x))))``."""
    return F.softplus(-d_fake).mean()


def d_logistic(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss on logits: ``mean(softplus(-D(x))) + mean(softplus(D(G(x))))``."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def g_adversarial(kind: str, d_fake: torch.Tensor, lsgan_target: float = 1.0) -> torch.Tensor:
    """The generator side of ``kind`` (lsgan, hinge or logistic)."""
    if kind == "lsgan":
        return g_lsgan(d_fake, lsgan_target)
    return g_hinge(d_fake) if kind == "hinge" else g_logistic(d_fake)


def d_adversarial(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor, real_label: float = 0.9) -> torch.Tensor:
    """The discriminator side of ``kind`` (lsgan, hinge or logistic)."""
    if kind == "lsgan":
        return d_lsgan(d_real, d_fake, real_label)
    return d_hinge(d_real, d_fake) if kind == "hinge" else d_logistic(d_real, d_fake)


def d_r1(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 penalty: ``mean ||grad_x D(x)||^2`` over the real batch. ``real`` must require grad."""
    (grad,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
    return grad.float().pow(2).sum(dim=(1, 2, 3)).mean()


def g_mode_seeking(
    out_a: torch.Tensor, out_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor, bound: float = 0.1
) -> torch.Tensor:
    """Diversity term: ``-min(mean|G(z_a) - G(z_b)| / mean|z_a - z_b|, bound)``.

    Mode seeking (Mao et al. 2019) in the bounded form of Yang et al. 2019 (DSGAN): Mao's ``1 / (ratio + eps)``
    has a gradient of ``1 / eps^2`` where the ratio is 0, which is exactly where a generator starts that gained
    zero-weight noise channels. Minimising it spreads two noise draws of the same input apart, up to ``bound``.
    """
    ratio = (out_a - out_b).abs().mean() / (z_a - z_b).abs().mean().clamp_min(1e-8)
    return -ratio.clamp(max=bound)


def g_identity(emb_fake: torch.Tensor, emb_real: torch.Tensor) -> torch.Tensor:
    """Mean squared Euclidean distance between face embeddings ``[B, D]`` (eq. 4)."""
    return (emb_fake - emb_real).pow(2).sum(dim=1).mean()


def g_feature_l1(feats_fake: dict[str, torch.Tensor], feats_real: dict[str, torch.Tensor], names) -> torch.Tensor:
    """Mean over ``names`` of the L1 distance between feature maps (the face-perceptual loss)."""
    return torch.stack([(feats_fake[n] - feats_real[n]).abs().mean() for n in names]).mean()


# --- frozen feature networks --------------------------------------------------------------------------------------


class FaceFeatures(nn.Module):
    """The dlib-ResNet port as a frozen feature extractor for images in [-1, 1] of any size.

    Images are resampled bilinearly to the network's 150x150 input: the whole aligned image, not a tight chip.
    """

    def __init__(self, weights: str | Path | None = None, random: bool = False, bf16: bool = False):
        super().__init__()
        from augmentor.identity.network import DlibResNet

        self.net = DlibResNet() if random else DlibResNet.from_file(weights)
        self.bf16 = bf16  # run the network under bf16 autocast (the trainer's choice for every network)
        self.requires_grad_(False).train(False)

    def train(self, mode: bool = True) -> FaceFeatures:
        return super().train(False)  # frozen: never leaves eval mode

    def forward(self, images: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Feature maps in float32 (the network itself may run under the trainer's bf16 autocast)."""
        x = F.interpolate((images.float() + 1) / 2, size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            feats = self.net.features(x, layers)
        return {k: v.float() for k, v in feats.items()}


ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


class LpipsDistance(nn.Module):
    """The real ``lpips`` package (AlexNet), frozen. Inputs in [-1, 1]."""

    def __init__(self, random_backbone: bool = False):
        super().__init__()
        try:
            import lpips
        except ImportError as exc:
            raise MissingModelFileError("perceptual_kind 'lpips' needs the lpips package: pip install lpips") from exc
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        weights = torch_home / "hub" / "checkpoints" / ALEXNET_FILE
        if not random_backbone and not weights.is_file():
            raise MissingModelFileError(
                f"LPIPS needs torchvision's AlexNet weights at {weights} (set TORCH_HOME to the folder holding "
                f"hub/checkpoints/{ALEXNET_FILE}); they cannot be downloaded here. Use perceptual_kind: face instead."
            )
        try:
            self.net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=random_backbone, verbose=False)
        except OSError as exc:  # a download attempt that failed
            raise MissingModelFileError(f"LPIPS could not load its AlexNet backbone ({exc}); see {weights}") from exc
        self.requires_grad_(False).train(False)

    def train(self, mode: bool = True) -> LpipsDistance:
        return super().train(False)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.net(fake.float(), real.float()).mean()


# --- combiners ----------------------------------------------------------------------------------------------------


class CascadeLoss(nn.Module):
    """Holds the frozen networks and combines the per-block terms.

    Args:
        config: Weights and kinds.
        random_features: Use random-weight feature networks (tests only).
        bf16: Run the face feature network under bf16 autocast (the loss terms themselves stay float32).
    """

    def __init__(self, config: LossConfig | None = None, random_features: bool = False, bf16: bool = False):
        super().__init__()
        self.config = cfg = config or LossConfig()
        need_face = cfg.identity > 0 or (cfg.perceptual > 0 and cfg.perceptual_kind == "face")
        self.face = FaceFeatures(cfg.identity_weights, random=random_features, bf16=bf16) if need_face else None
        self.lpips = None
        if cfg.perceptual > 0 and cfg.perceptual_kind == "lpips":
            self.lpips = LpipsDistance(random_backbone=cfg.lpips_random or random_features)

    def generator(
        self,
        fakes: dict[int, torch.Tensor],
        reals: dict[int, torch.Tensor],
        d_fakes: dict[int, torch.Tensor] | None = None,
        valid: dict[int, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over blocks of the weighted terms (eq. 6), computed in float32 even under autocast.

        Args:
            fakes: ``{N: [B, 3, N, N]}`` generator outputs (face pasted back).
            reals: Ground truth at the same resolutions.
            d_fakes: Discriminator scores of ``fakes`` (raw), for the blocks that have one; None: no adversarial term.
            valid: ``{N: [B, 1, N, N]}``, 0 where the ground truth lies beyond the photo's edge. There the target is
                the fake itself (detached), so those pixels carry no L1, SSIM, perceptual or identity loss.

        Returns:
            The total and a flat dict of detached per-block terms, e.g. ``l1_128`` (tensors, so that a
            training loop can average them on the device and synchronise rarely).
        """
        cfg = self.config
        device = next(iter(fakes.values())).device
        total = torch.zeros((), device=device)
        logs: dict[str, torch.Tensor] = {}
        # Under CPU bf16 autocast torchmetrics' SSIM convolves in bf16 even on float inputs, and every loss built
        # from local means and variances is at risk: the terms are computed with autocast off.
        with torch.autocast(device.type, enabled=False):
            for r, fake in fakes.items():
                fake = fake.float()
                real = reals[r].float()
                if valid is not None:
                    real = torch.where(valid[r] > 0.5, real, fake.detach())
                terms = self._block_terms(r, fake, real)
                if cfg.adversarial and d_fakes is not None and r in d_fakes:
                    adv = g_adversarial(cfg.adversarial_kind, d_fakes[r].float(), cfg.lsgan_target)
                    terms["adv"] = (cfg.adversarial, adv)
                for name, (weight, value) in terms.items():
                    total = total + weight * value
                    logs[f"{name}_{r}"] = value.detach()
        return total, logs

    def _block_terms(self, r: int, fake: torch.Tensor, real: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """The reconstruction terms of one block, ``name -> (weight, value)``."""
        cfg = self.config
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if cfg.pixel:
            terms["l1"] = (cfg.pixel, g_pixel_l1(fake, real))
        if cfg.tv:
            terms["tv"] = (cfg.tv, g_total_variation(fake))
        if cfg.ssim and r >= cfg.ssim_from:
            terms["ssim"] = (cfg.ssim, g_ssim(fake, real))
        use_perc = cfg.perceptual > 0 and r >= cfg.perceptual_from
        use_id = cfg.identity > 0 and r >= cfg.identity_from
        face_perc = use_perc and cfg.perceptual_kind == "face"
        if self.face is not None and (face_perc or use_id):
            layers = (FACE_PERCEPTUAL_LAYERS if face_perc else ()) + (("embedding",) if use_id else ())
            feats_fake = self.face(fake, layers)
            with torch.no_grad():
                feats_real = self.face(real, layers)
            if face_perc:
                terms["perc"] = (cfg.perceptual, g_feature_l1(feats_fake, feats_real, FACE_PERCEPTUAL_LAYERS))
            if use_id:
                terms["id"] = (cfg.identity, g_identity(feats_fake["embedding"], feats_real["embedding"]))
        if use_perc and self.lpips is not None:
            terms["perc"] = (cfg.perceptual, self.lpips(fake, real))
        return terms

    def discriminator(
        self, d_reals: dict[int, torch.Tensor], d_fakes: dict[int, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over blocks of the discriminator loss; logs the loss and the mean raw scores of each block."""
        cfg = self.config
        total = torch.zeros((), device=next(iter(d_reals.values())).device)
        logs = {}
        for r, d_real in d_reals.items():
            d_real, d_fake = d_real.float(), d_fakes[r].float()
            value = d_adversarial(cfg.adversarial_kind, d_real, d_fake, cfg.real_label)
            total = total + value
            logs[f"d_{r}"] = value.detach()
            logs[f"d_real_{r}"] = d_real.detach().mean()
            logs[f"d_fake_{r}"] = d_fake.detach().mean()
        return total, logs

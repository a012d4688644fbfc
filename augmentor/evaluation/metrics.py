"""Quality metrics of hallucinated faces: match score, SSIM, FID/KID on face features, perceptual errors.

Every optional metric whose weights are absent is reported as unavailable, with the reason, never crashed on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augmentor.identity.network import CHIP_SIZE, PERCEPTUAL_LAYERS
from augmentor.resources import MissingModelFileError

log = logging.getLogger(__name__)

PIEAPP_FILE = "PieAPPv0.1.pth"


def torch_hub_checkpoints() -> Path:
    """Where torch.hub keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 -> ``[B, 3, H, W]`` uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


class FaceDescriptor(nn.Module):
    """128-D dlib-ResNet descriptors of whole aligned images (uint8 ``[B, 3, H, W]``), resized to 150x150, or of
    dlib face chips (:meth:`chip_descriptors`).

    Usable as torchmetrics' ``feature=`` extractor (it has ``num_features``).
    """

    num_features = 128
    name = "dlib-ResNet 128-D"

    def __init__(self, weights: str | Path | None = None):
        """``weights``: dlib's ``.dat`` (None: the installed copy) or a pack's ``identity.safetensors``."""
        super().__init__()
        from augmentor.identity.network import DlibResNet

        self.net = DlibResNet.from_file(weights).eval().requires_grad_(False)

    def chips(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        return F.interpolate(x, size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False, antialias=True)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.chips(images.to(next(self.net.parameters()).device)))

    @torch.inference_mode()
    def chip_descriptors(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Descriptors ``[B, 128]`` of dlib's own 150 px face chips (padding 0.25) cut from aligned uint8 images.

        ``landmarks``: ``[B, 68, 2]`` aligned-crop points. The same chips ``verify-lfw`` feeds the dlib net
        (``face_chip_from_aligned``), so dlib's 0.6 same-person threshold applies.
        """
        from augmentor.identity.network import face_chip_from_aligned

        device = next(self.net.parameters()).device
        x = images.to(device).float() / 255.0
        chips = face_chip_from_aligned(x, torch.as_tensor(landmarks, dtype=torch.float32, device=device)).clamp(0, 1)
        return self.net(chips)

    @torch.inference_mode()
    def describe(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Descriptors ``[B, 128]`` and the feature maps of :data:`PERCEPTUAL_LAYERS`, in one pass."""
        feats = self.net.features(
            self.chips(images.to(next(self.net.parameters()).device)), (*PERCEPTUAL_LAYERS, "embedding")
        )
        return feats.pop("embedding"), feats


class ResNet50Features(nn.Module):
    """Pooled features of a torchvision ResNet-50 whose weights a user has in a local file.

    The file is a state dict (``.safetensors``, or ``.pth`` loaded with ``weights_only=True``) of
    ``torchvision.models.resnet50``; ``fc`` is dropped if present. Nothing is downloaded.
    """

    num_features = 2048
    name = "ResNet-50 2048-D"

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchvision.models import resnet50

        weights = Path(weights)
        if not weights.is_file():
            raise MissingModelFileError(f"ResNet-50 weights {weights} not found; pass a local state-dict file")
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("fc.", "module.fc."))}
        net = resnet50()
        net.fc = nn.Identity()
        net.load_state_dict(state)
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.device).float() / 255.0
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of ``[B, D]`` features (paper eq. 7)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


SSIM_SIGMA = 1.5  # Gaussian window sigma (Wang et al. 2004)
SSIM_RADIUS = 5  # scikit-image's window: 2 * int(3.5 * sigma + 0.5) + 1 = 11 px, so a 5 px border has no full window
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_DATA_RANGE = 255.0


def _gaussian_kernel() -> np.ndarray:
    taps = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map of uint8 ``[B, H, W, 3]`` images over the valid region, mean over RGB: ``[B, H-10, W-10]``.

    Wang et al. 2004 exactly as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)``: float64, population covariances, and only the
    pixels whose 11x11 window lies inside the image (scikit-image crops the 5 px border before averaging).
    """
    from scipy.ndimage import correlate1d

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    stack = np.stack([x, y, x * x, y * y, x * y])  # [5, B, H, W, 3]
    kernel, r = _gaussian_kernel(), SSIM_RADIUS
    for axis in (2, 3):  # H, W; the border is cropped below, so the filter's edge mode never matters
        stack = correlate1d(stack, kernel, axis=axis, mode="reflect")
    mu_x, mu_y, xx, yy, xy = stack[:, :, r:-r, r:-r]
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2, (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    value = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean(-1)


def ssim_scores(
    a: np.ndarray, b: np.ndarray, masks: np.ndarray | None = None, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image SSIM over the whole image and over the background (``mask == 0`` pixels of the SSIM map).

    Args:
        a, b: uint8 ``[B, H, W, 3]``.
        masks: ``[B, H, W]`` face masks (1 = face); None gives NaN background scores.
        batch_size: Images per pass (memory only).

    Returns:
        ``(whole [B], background [B])``; the background score is NaN where no background pixel lies in the valid
        region.
    """
    whole, background = [], []
    r = SSIM_RADIUS
    for i in range(0, len(a), batch_size):
        smap = ssim_map(a[i : i + batch_size], b[i : i + batch_size])  # [b, H-10, W-10]
        whole.append(smap.mean(axis=(1, 2)))
        if masks is None:
            background.append(np.full(len(smap), np.nan))
            continue
        bg = masks[i : i + batch_size, r:-r, r:-r] == 0
        with np.errstate(invalid="ignore"):
            background.append((smap * bg).sum(axis=(1, 2)) / bg.sum(axis=(1, 2)))
    return np.concatenate(whole), np.concatenate(background)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 ``[B, H, W, 3]`` images over the whole image (see :func:`ssim_map`)."""
    return ssim_scores(a, b)[0]


def face_perceptual(maps_a: dict[str, torch.Tensor], maps_b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image mean over layers of the RMS difference of dlib-ResNet feature maps."""
    per_layer = [(maps_a[k] - maps_b[k]).pow(2).flatten(1).mean(1).sqrt() for k in maps_a]
    return torch.stack(per_layer).mean(0)


# --- optional metrics: each returns (metric or None, note) ---------------------------------------------------


def load_lpips(device: torch.device):
    """LPIPS (AlexNet) if torchvision's AlexNet weights are on disk."""
    from augmentor.training.losses import LpipsDistance

    try:
        module = LpipsDistance().to(device)
    except MissingModelFileError as exc:
        return None, f"not available here: {exc}"
    return module.net, "LPIPS (AlexNet)"


def load_pieapp(device: torch.device):
    """PieAPP through piq if its weights are on disk."""
    path = torch_hub_checkpoints() / PIEAPP_FILE
    if not path.is_file():
        return None, f"not available here: PieAPP needs {path} (piq's {PIEAPP_FILE}; set TORCH_HOME)"
    try:
        import piq
    except ImportError:
        return None, "not available here: the piq package is not installed"
    return piq.PieAPP(reduction="none", data_range=1.0).to(device), "PieAPP (piq)"


def load_inception_fid(weights: str | Path | None, device: torch.device):
    """Inception-v3 FID (torchmetrics + torch-fidelity) if the FID Inception weights file is given."""
    if weights is None:
        return None, "not available here: pass --inception-weights (pt_inception-2015-12-05-6726825d.pth)"
    if not Path(weights).is_file():
        return None, f"not available here: {weights} does not exist"
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    except Exception as exc:  # noqa: BLE001 (torch-fidelity missing or an incompatible file: report, not crash)
        return None, f"not available here: {type(exc).__name__}: {exc}"
    return metric.to(device), "FID (Inception-v3 pool3, 299 px)"


# --- set-level distances on features, float64 numpy ---------------------------------------------------------


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to ``[N, D]`` and ``[M, D]`` features (Heusel et al. 2017).

    Unbiased covariances and ``Tr sqrt(S1 S2)`` from the eigenvalues of ``S1 S2``, as torchmetrics computes FID.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return frechet_from_moments(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))


def frechet_from_moments(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians given by their means and covariances."""
    eig = np.linalg.eigvals(s1 @ s2)
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel ``(x . y / D + 1) ** 3`` (Bińkowski et al. 2018)."""
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / x.shape[1] + 1.0) ** 3


def kernel_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with :func:`polynomial_kernel` over the whole sets (KID without subsets)."""
    return kid_from_kernels(polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake))


def kid_from_kernels(
    k_rr: np.ndarray,
    k_ff: np.ndarray,
    k_rf: np.ndarray,
    count_r: np.ndarray | None = None,
    count_f: np.ndarray | None = None,
) -> float:
    """Unbiased MMD² from kernel matrices; ``count_*`` are bootstrap multiplicities (pairs of a sample with itself,
    duplicates included, are left out of the within-set means)."""
    count_r = np.ones(len(k_rr)) if count_r is None else count_r
    count_f = np.ones(len(k_ff)) if count_f is None else count_f

    def within(k: np.ndarray, c: np.ndarray) -> float:
        return float((c @ k @ c - (c**2 * np.diag(k)).sum()) / (c.sum() ** 2 - (c**2).sum()))

    cross = float(count_r @ k_rf @ count_f / (count_r.sum() * count_f.sum()))
    return within(k_rr, count_r) + within(k_ff, count_f) - 2 * cross

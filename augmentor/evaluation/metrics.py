"""Quality metrics of hallucinated faces: match score, SSIM, FID/KID on face features, perceptual errors.

Every optional metric whose weights are absent is reported as unavailable, with the reason, never crashed on.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augmentor.resources import MissingModelFileError

log = logging.getLogger(__name__)

DLIB_THRESHOLD = 0.6  # dlib's same-person distance
PIEAPP_FILE = "PieAPPv0.1.pth"
PERCEPTUAL_LAYERS = ("level4", "level3", "level2")  # dlib-ResNet maps of the face-perceptual distance


def torch_hub_checkpoints() -> Path:
    """Where torch.hub keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 -> ``[B, 3, H, W]`` uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


class FaceDescriptor(nn.Module):
    """128-D dlib-ResNet descriptors of whole aligned images (uint8 ``[B, 3, H, W]``), resized to 150x150.

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
        return F.interpolate(x, size=(150, 150), mode="bilinear", align_corners=False, antialias=True)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.chips(images.to(next(self.net.parameters()).device)))

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


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) of uint8 ``[B, H, W, 3]`` images.

    Computed by torchmetrics on [0, 1] floats with ``data_range=1``.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = to_tensor(a).float() / 255.0, to_tensor(b).float() / 255.0
    values = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, reduction="none"
    )
    return values.numpy()


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


class PrecomputedFeatures(nn.Identity):
    """Lets torchmetrics' FID/KID take features computed once for several metrics (its ``feature=`` hook)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


def feature_fid(real: torch.Tensor, fake: torch.Tensor, kid_subset: int = 100) -> tuple[float, float, float]:
    """FID and KID (mean, std) between two sets of ``[N, D]`` features, through torchmetrics.

    Raises:
        ValueError: fewer than 2 samples.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least 2 images per set")
    hook = PrecomputedFeatures(real.shape[1])
    fid = FrechetInceptionDistance(feature=hook, reset_real_features=True)
    with warnings.catch_warnings():  # "KID keeps every feature in memory": intended, the sets are small
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=hook, subset_size=min(kid_subset, len(real), len(fake)), subsets=50)
    for metric in (fid, kid):
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
    kid_mean, kid_std = kid.compute()
    return float(fid.compute()), float(kid_mean), float(kid_std)

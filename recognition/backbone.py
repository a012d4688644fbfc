"""Recognition networks: a trunk, the paper's 256-D ``feat_extract`` embedding layer and a classifier head.

Trunks: torchvision ResNet-50 / ResNet-18 (ImageNet normalisation, run at the crop's own 128, 112, 96 or 64 px) and our
port of dlib's face ResNet (:class:`augmentor.identity.network.DlibResNet`, its 256-D pooled features; the crop is resized
to 150 px inside the network). Heads: a plain softmax classifier (the paper) or ArcFace (additive angular margin).
Checkpoints are ``model.safetensors`` + ``config.json``, and :func:`load_model` rebuilds the network from the JSON.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from augmentor.config import to_dict
from augmentor.errors import InputError
from augmentor.identity.network import CHIP_SIZE
from augmentor.layout import CROP_SIZE

log = logging.getLogger(__name__)

BACKBONES = ("resnet50", "resnet18", "dlib-resnet")
FORMAT = "augmentor-recognition"
FORMAT_VERSION = 1
DLIB_INPUT = CHIP_SIZE  # the dlib face ResNet's chip side
DLIB_EMBEDDING_DIM = 128  # its descriptor (the fc layer that model.embedding: pretrained keeps)
# Where dlib's 150-px face chip (padding 0.25) lies in our eye-aligned crop, as an affine_grid theta in normalised
# coordinates (so it holds at 128 and 112 px): the mean of `augmentor.identity.network.face_chip_transform` over 2,000
# aligned CelebA faces (chip side = 0.573 of the crop, centred at x +0.016, y +0.101; per-face spread ~2.5 px).
# The dlib net was trained on such tight chips; fed the whole crop, it sees a face half the size it expects.
DLIB_CHIP_THETA = ((0.5731, 0.0, 0.0161), (0.0, 0.5731, 0.1009))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class NetConfig:
    """The architecture; saved in ``config.json`` and enough to rebuild the network."""

    backbone: Literal["resnet50", "resnet18", "dlib-resnet"] = "resnet50"  # the trunk
    embedding_dim: int = 256  # the paper's feat_extract layer: Linear + BatchNorm1d after the pooled trunk features
    image_size: int = CROP_SIZE  # input crop side, set from data.image_size by finetune; dlib-resnet resizes to 150 inside
    head: Literal["softmax", "arcface"] = "softmax"  # softmax: the paper; arcface: additive angular margin
    arcface_scale: float = 64.0  # ArcFace logit scale s
    arcface_margin: float = 0.5  # ArcFace angular margin m (radians)
    num_classes: int = 0  # identities of the training manifests, set by finetune
    # fresh: a new feat_extract (Linear + BatchNorm1d, embedding_dim wide), the paper's layer. pretrained (dlib-resnet
    # only, embedding_dim 128): feat_extract is dlib's own 128-D layer (Linear, no bias, no BatchNorm), loaded with
    # the trunk, so before any step the embedding is the untouched dlib descriptor of the template chip
    embedding: Literal["fresh", "pretrained"] = "fresh"


class SoftmaxHead(nn.Module):
    """A linear classifier over the embedding (labels unused)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(embedding.float())  # [N, C]


def arcface_logits(cos: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """ArcFace logits ``s * cos(theta + m)`` for the true class, ``s * cos(theta)`` for the others.

    Past ``theta + m > pi`` the target logit continues linearly (``cos - m sin m``), as insightface, so it keeps
    falling as theta grows.
    """
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-9))
    phi = cos * math.cos(margin) - sin * math.sin(margin)
    phi = torch.where(cos > math.cos(math.pi - margin), phi, cos - math.sin(math.pi - margin) * margin)
    target = F.one_hot(labels, cos.shape[1]).bool()
    return scale * torch.where(target, phi, cos)


class ArcFaceHead(nn.Module):
    """Cosine classifier with an additive angular margin (Deng et al., CVPR 2019)."""

    def __init__(self, dim: int, num_classes: int, scale: float, margin: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.linear(F.normalize(embedding.float()), F.normalize(self.weight))  # [N, C]
        if labels is None:
            return self.scale * cos
        return arcface_logits(cos, labels, self.scale, self.margin)


def _trunk(name: str) -> tuple[nn.Module, int]:
    if name in ("resnet50", "resnet18"):
        from torchvision import models

        net = getattr(models, name)(weights=None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    if name == "dlib-resnet":
        from augmentor.identity.network import DlibResNet

        net = DlibResNet()
        net.fc = nn.Identity()  # its 128-D layer is replaced by feat_extract; an unused layer would break DDP
        for key, param in net.named_parameters():
            if ".affine" in f".{key}":
                # dlib's affine layers are batch norms folded into fixed scales; without normalisation the
                # network diverges in a few steps when they train, so they stay frozen, like BN statistics.
                param.requires_grad_(False)
        return net, 256
    raise InputError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")


def _embedding_layer(config: NetConfig, trunk_dim: int) -> nn.Sequential:
    """``feat_extract``: the paper's Linear + BatchNorm1d, or dlib's own bias-free 128-D layer (``embedding:
    pretrained``), whose weights :func:`load_init` copies from the dlib model."""
    if config.embedding == "fresh":
        return nn.Sequential(nn.Linear(trunk_dim, config.embedding_dim), nn.BatchNorm1d(config.embedding_dim))
    if config.backbone != "dlib-resnet" or config.embedding_dim != DLIB_EMBEDDING_DIM:
        raise InputError(
            f"model.embedding: pretrained keeps dlib's own {DLIB_EMBEDDING_DIM}-D layer: it needs backbone "
            f"dlib-resnet and embedding_dim {DLIB_EMBEDDING_DIM} (got {config.backbone}, {config.embedding_dim})"
        )
    return nn.Sequential(nn.Linear(trunk_dim, DLIB_EMBEDDING_DIM, bias=False))


class RecognitionNet(nn.Module):
    """``uint8 crops [N, 3, S, S] -> trunk -> feat_extract -> embedding [N, D]`` (+ head logits in training)."""

    def __init__(self, config: NetConfig):
        super().__init__()
        if config.num_classes < 1:
            raise InputError("num_classes must be set (the identities of the training manifests)")
        self.config = config
        self.trunk, trunk_dim = _trunk(config.backbone)
        self.feat_extract = _embedding_layer(config, trunk_dim)
        if config.head == "softmax":
            self.head: nn.Module = SoftmaxHead(config.embedding_dim, config.num_classes)
        else:
            self.head = ArcFaceHead(
                config.embedding_dim, config.num_classes, config.arcface_scale, config.arcface_margin
            )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` crops on the 0..255 scale (uint8 or float) -> ``[N, D]`` embeddings."""
        x = images.float() / 255.0  # [N, 3, S, S] in [0, 1]
        if self.config.backbone == "dlib-resnet":
            theta = torch.tensor(DLIB_CHIP_THETA, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
            grid = F.affine_grid(theta, [x.shape[0], 3, DLIB_INPUT, DLIB_INPUT], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", align_corners=False)  # [N, 3, 150, 150] chip
            pooled = self.trunk.features(x, ("pooled",))["pooled"]  # [N, 256]; dlib normalises inside
        else:
            pooled = self.trunk((x - self.mean) / self.std)  # [N, 2048] or [N, 512]
        return self.feat_extract(pooled)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Embeddings, or ``(embeddings, logits)`` when ``labels`` are given (training goes through here, for DDP)."""
        embedding = self.embed(images)
        if labels is None:
            return embedding
        return embedding, self.head(embedding, labels)


# --------------------------------------------------------------------------------------------------- init weights


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("trunk."): v for k, v in state.items()}


def load_init(net: RecognitionNet, init: str) -> str:
    """Initialise the trunk from ``init``; the head always starts fresh, and so does the embedding layer unless
    ``model.embedding`` is ``pretrained`` (then it is the dlib model's own 128-D layer, from the same file).

    Args:
        net: The network.
        init: ``none`` (random), ``pretrained`` (dlib-resnet only: the face-recognition-models copy of
            ``dlib_face_recognition_resnet_model_v1.dat``, installed offline) or the path of a local file: a
            torchvision state dict (``.safetensors``, or ``.pth``/``.pt`` read with ``weights_only=True``), e.g.
            ImageNet or VGGFace2 ResNet-50 weights, or for dlib-resnet a dlib ``.dat`` file. Nothing is downloaded.

    Returns:
        A one-line description of what was loaded.

    Raises:
        FileNotFoundError: the file does not exist.
        InputError: the file does not fit the trunk.
    """
    name = net.config.backbone
    if init == "none":
        if net.config.embedding == "pretrained":
            raise InputError("model.embedding: pretrained needs pretrained weights (--init pretrained or a dlib .dat)")
        return "random initialisation"
    if init == "pretrained":
        if name != "dlib-resnet":
            raise InputError(f"--init pretrained only exists for dlib-resnet; for {name} pass a local weights file")
        path = None
    else:
        path = Path(init)
        if not path.is_file():
            raise FileNotFoundError(f"--init {path}: no such weights file (nothing is downloaded)")
    if name == "dlib-resnet" and (path is None or path.suffix == ".dat"):
        from augmentor.identity.network import read_dlib_resnet

        dat = {k: torch.from_numpy(v.copy()) for k, v in read_dlib_resnet(path).items()}
        state = {k: v for k, v in dat.items() if not k.startswith("fc.")}
        if net.config.embedding == "pretrained":
            net.feat_extract[0].weight.data.copy_(dat["fc.weight"])
    else:
        if net.config.embedding == "pretrained":
            raise InputError(f"model.embedding: pretrained needs dlib's own weights (a .dat), not {path}")
        state = _read_state(path)
    trunk_keys = set(net.trunk.state_dict())
    dropped = sorted(k for k in state if k not in trunk_keys)
    missing = sorted(trunk_keys - set(state))
    if missing:
        raise InputError(
            f"--init {init} does not fit {name}: {len(missing)} trunk tensors missing, e.g. {missing[:3]}; "
            f"the file has e.g. {sorted(state)[:3]}"
        )
    net.trunk.load_state_dict({k: v for k, v in state.items() if k in trunk_keys})
    if dropped:
        log.info("--init %s: ignored %d tensors not in the trunk (e.g. %s)", init, len(dropped), dropped[:3])
    what = "trunk and 128-D embedding layer" if net.config.embedding == "pretrained" else "trunk"
    return f"{name} {what} from {path or 'the installed dlib model'}"


# --------------------------------------------------------------------------------------------------- checkpoints


def save_model(net: RecognitionNet, directory: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``architecture`` + ``meta``) to ``directory``, atomically."""
    from augmentor.training.checkpoints import write_checkpoint

    return write_checkpoint(net.state_dict(), to_dict(net.config), directory, FORMAT, FORMAT_VERSION, meta)


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a recognition checkpoint folder, checked for its format."""
    from augmentor.training.checkpoints import read_checkpoint_config

    return read_checkpoint_config(directory, FORMAT, FORMAT_VERSION)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[RecognitionNet, dict[str, Any]]:
    """Rebuild the network from ``config.json``, load its weights, and return it in eval mode with the config.

    Raises:
        FileNotFoundError: a file is missing.
        InputError: the files do not match each other.
    """
    from augmentor.training.checkpoints import load_checkpoint

    return load_checkpoint(directory, FORMAT, FORMAT_VERSION, NetConfig, RecognitionNet, device)

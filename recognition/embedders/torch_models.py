"""``--model NAME=torchscript:FILE`` and ``--model NAME=facenet:vggface2|casia-webface|FILE``: torch recognisers.

TorchScript models take arcface_torch's input unless the spec says otherwise: 112 px arcface-template chips, RGB,
``(pixel - 127.5) / 127.5``. facenet-pytorch's ``InceptionResnetV1`` takes 160 px chips standardised as its
``fixed_image_standardization`` does, ``(pixel - 127.5) / 128``, and returns L2-normalised 512-D embeddings. Its
classifier (``logits.*``) is not needed and is dropped from the state dict; every other weight must be there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recognition.embedders.chips import ChipEmbedder, file_fingerprint
from recognition.embedders.spec import ModelSpec, SpecError

TORCHSCRIPT_INPUT = (112, 127.5, 127.5)  # size, mean, std: arcface_torch's training input
FACENET_INPUT = (160, 127.5, 128.0)  # facenet-pytorch: 160 px, fixed_image_standardization


class TorchEmbedder(ChipEmbedder):
    """A torch module's output (the first one when it returns several) for normalised chips."""

    net: torch.nn.Module
    device: torch.device

    @torch.inference_mode()
    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self.net(torch.from_numpy(x).to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float().reshape(len(x), -1).cpu().numpy()


class TorchScriptEmbedder(TorchEmbedder):
    def __init__(self, spec: ModelSpec, path: Path, device: torch.device):
        try:
            self.net = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as exc:
            raise SpecError(f"{path} is not a TorchScript file ({exc})") from exc
        self.device = device
        self.inputs = spec.inputs.filled(*TORCHSCRIPT_INPUT)
        self.fingerprint = file_fingerprint(path, spec, self.inputs)
        self.config = self.describe(spec, path)


def load_facenet_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``InceptionResnetV1`` weights in ``path`` without the classifier.

    Raises:
        SpecError: the file is not a state dict of tensors.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a state dict
        raise SpecError(f"{path} is not a facenet-pytorch state dict ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError(f"{path} is not a state dict of tensors")
    return {k: v for k, v in state.items() if not k.startswith("logits.")}


class FacenetEmbedder(TorchEmbedder):
    def __init__(self, spec: ModelSpec, path: Path, device: torch.device):
        try:
            from facenet_pytorch import InceptionResnetV1
        except ImportError as exc:
            raise SpecError(
                "facenet: facenet-pytorch is not installed; `pip install --no-deps facenet-pytorch` (docs/install.md)"
            ) from exc
        net = InceptionResnetV1(pretrained=None, classify=False)
        try:
            net.load_state_dict(load_facenet_state(path))
        except RuntimeError as exc:
            raise SpecError(f"{path} does not fit InceptionResnetV1: {exc}") from exc
        self.net = net.eval().requires_grad_(False).to(device)
        self.device = device
        self.inputs = spec.inputs.filled(*FACENET_INPUT)
        self.fingerprint = file_fingerprint(path, spec, self.inputs)
        self.config = self.describe(spec, path)

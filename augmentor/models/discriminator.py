"""One discriminator per block: CASIA-Net-like, with strided convolutions instead of pooling and FC layers."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from augmentor.models.blocks import act, conv, he_init

DiscriminatorNorm = Literal["none", "spectral"]


class Discriminator(nn.Module):
    """Pairs of 3x3 convolutions (the second of each pair 4x4 with stride 2, replacing CASIA-Net's max-pooling)
    down to 4 x 4, then a 4x4 valid convolution to one raw score per image.

    No sigmoid and no batch norm. The score is a logit (or an LSGAN regression value): a sigmoid saturates as soon
    as the discriminator wins, and batch norm over all-real and all-fake batches lets it tell them apart from batch
    statistics alone; together they left the generator with no adversarial gradient. Spectral norm
    (Miyato et al. 2018) keeps the discriminator Lipschitz instead. LeakyReLU(0.2); He initialisation.

    Args:
        resolution: Input side N.
        widths: Width keyed by spatial resolution (needs 4 ... N).
        norm: ``spectral`` (spectral norm on every convolution) or ``none``.
    """

    def __init__(self, resolution: int, widths: dict[int, int], norm: DiscriminatorNorm = "spectral"):
        super().__init__()
        if norm not in ("none", "spectral"):
            raise ValueError(f"norm must be 'none' or 'spectral', got {norm!r}")
        layers: list[nn.Module] = [conv(3, widths[resolution]), act()]
        r, channels = resolution, widths[resolution]
        while r > 4:
            layers += [conv(channels, channels), act(), conv(channels, widths[r // 2], kernel=4, stride=2), act()]
            r, channels = r // 2, widths[r // 2]
        layers += [nn.Conv2d(channels, 1, 4), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        he_init(self)
        if norm == "spectral":
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Conv2d):
                    self.net[i] = spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, N, N]`` in [-1, 1] -> ``[B, 1]`` raw scores, higher = more real."""
        return self.net(x)

"""One discriminator per block: CASIA-Net-like, with strided convolutions instead of pooling and FC layers."""

from __future__ import annotations

import torch
from torch import nn

from augmentor.models.blocks import act, conv, he_init


class Discriminator(nn.Module):
    """Pairs of 3x3 convolutions (the second of each pair with stride 2, replacing CASIA-Net's max-pooling)
    down to 4 x 4, then a 4x4 valid convolution to one score per image and a sigmoid.

    Batch norm follows every convolution but the first and the scoring one; LeakyReLU(0.2); He initialisation.

    Args:
        resolution: Input side N.
        widths: Width keyed by spatial resolution (needs 4 ... N).
    """

    def __init__(self, resolution: int, widths: dict[int, int]):
        super().__init__()
        layers: list[nn.Module] = [conv(3, widths[resolution]), act()]
        r, channels = resolution, widths[resolution]
        while r > 4:
            layers += [conv(channels, channels, bias=False), nn.BatchNorm2d(channels), act()]
            layers += [
                conv(channels, widths[r // 2], kernel=4, stride=2, bias=False),
                nn.BatchNorm2d(widths[r // 2]),
                act(),
            ]
            r, channels = r // 2, widths[r // 2]
        # No batch norm on the scoring convolution: it would normalise away the real/fake difference of a batch.
        layers += [nn.Conv2d(channels, 1, 4), nn.Flatten(), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, N, N]`` in [-1, 1] -> ``[B, 1]`` in (0, 1), 1 = real."""
        return self.net(x)

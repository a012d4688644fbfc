"""Building blocks shared by the generator and the discriminator."""

from __future__ import annotations

import torch
from torch import nn

NEGATIVE_SLOPE = 0.2


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    """A 'same'-padded convolution (for stride 2 the output is exactly half the size)."""
    padding = dilation * (kernel - 1) // 2
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias)


def act() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


class ResidualBlock(nn.Module):
    """conv-LReLU-conv plus the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels), act(), conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelShuffleUp(nn.Module):
    """Convolution to 4x the channels, then pixel shuffle: doubles the resolution (Shi et al. 2016)."""

    def __init__(self, in_ch: int, out_ch: int, activation: bool = True):
        super().__init__()
        layers: list[nn.Module] = [conv(in_ch, out_ch * 4), nn.PixelShuffle(2)]
        if activation:
            layers.append(act())
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def he_init(module: nn.Module) -> None:
    """He (Kaiming) normal initialisation for every convolution, for LeakyReLU(0.2); zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)

"""One generator block, ``block_N``: an encoder-decoder from the block's input to an N x N RGB image."""

from __future__ import annotations

import torch
from torch import nn

from augmentor.models.blocks import PixelShuffleUp, ResidualBlock, act, conv, he_init


class GeneratorBlock(nn.Module):
    """``block_N`` of the cascade (paper Sec. 3.1).

    Encoder: an atrous (dilation 2) convolution at N x N, then one stride-2 convolution + residual block
    per halving down to 4 x 4. Decoder: one convolution + pixel-shuffle block per doubling back to N x N,
    each joined by a skip connection (addition, U-Net style but without doubling the decoder's width) to the
    encoder feature of the same shape.
    A final convolution + tanh gives RGB. ``block_N`` has log2(N / 4) residual and pixel-shuffle blocks:
    five for block_128, one for block_8.

    Args:
        resolution: N.
        in_channels: Input channels.
        widths: Feature width keyed by spatial resolution (needs 4 ... N).
    """

    def __init__(self, resolution: int, in_channels: int, widths: dict[int, int]):
        super().__init__()
        self.resolution = resolution
        self.stem = nn.Sequential(conv(in_channels, widths[resolution], dilation=2), act())
        self.down = nn.ModuleList()
        r = resolution
        while r > 4:
            self.down.append(
                nn.Sequential(conv(widths[r], widths[r // 2], stride=2), act(), ResidualBlock(widths[r // 2]))
            )
            r //= 2
        self.up = nn.ModuleList()
        while r < resolution:
            self.up.append(PixelShuffleUp(widths[r], widths[2 * r]))
            r *= 2
        self.to_rgb = conv(widths[resolution], 3)
        he_init(self)
        with torch.no_grad():  # start near grey instead of saturating tanh: faster, steadier early training
            self.to_rgb.weight.mul_(0.1)

    @property
    def num_residual_blocks(self) -> int:
        return sum(isinstance(m, ResidualBlock) for m in self.modules())

    @property
    def num_pixel_shuffle_blocks(self) -> int:
        return sum(isinstance(m, PixelShuffleUp) for m in self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, N, N]`` -> ``[B, 3, N, N]`` in [-1, 1]."""
        h = self.stem(x)
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        skips.pop()  # the 4 x 4 bottleneck is h itself
        for up in self.up:
            h = up(h) + skips.pop()
        return torch.tanh(self.to_rgb(h))

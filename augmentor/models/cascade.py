"""The cascade of generator blocks, 8x8 -> 128x128, with exact face paste-back at every block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augmentor.models.blocks import PixelShuffleUp, he_init
from augmentor.models.config import CascadeConfig
from augmentor.models.discriminator import Discriminator
from augmentor.models.generator import GeneratorBlock


def paste_face(output: torch.Tensor, masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the face pixels of ``output`` by the input's, bit for bit (``torch.where``, not a blend).

    Args:
        output: ``[B, 3, N, N]`` generated image.
        masked: ``[B, 3, N, N]`` masked input.
        mask: ``[B, 1, N, N]``, 1 on face pixels.
    """
    return torch.where(mask > 0.5, masked, output)


def input_pyramid(
    masked: torch.Tensor, mask: torch.Tensor, resolutions: tuple[int, ...]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Masked face and mask at every resolution, computed from the full-size masked input alone.

    A level's mask is the halved mask thresholded at 0.5 (binary at every level). A face
    pixel's value is the mean of the face pixels it covers, so the black background never darkens the rim.

    Args:
        masked: ``[B, 3, S, S]`` in [-1, 1], background pixels at any value (ignored).
        mask: ``[B, 1, S, S]`` in {0, 1}.

    Returns:
        ``{N: (masked_N [B, 3, N, N], mask_N [B, 1, N, N])}``.
    """
    size = masked.shape[-1]
    levels = {}
    for r in resolutions:
        if r == size:
            m = (mask > 0.5).to(masked.dtype)
            levels[r] = (masked * m + (m - 1), m)  # background at -1 (black)
            continue
        k = size // r
        cover = F.avg_pool2d(mask, k)
        m = (cover >= 0.5).to(masked.dtype)
        mean = F.avg_pool2d(masked * mask, k) / cover.clamp_min(1e-6)
        levels[r] = (mean * m + (m - 1), m)
    return levels


def image_pyramid(image: torch.Tensor, resolutions: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Ground truth at every resolution by 2x2-block averaging (bilinear halving)."""
    size = image.shape[-1]
    return {r: image if r == size else F.avg_pool2d(image, size // r) for r in resolutions}


class Cascade(nn.Module):
    """The multi-scale generator: ``block_8`` ... ``block_128`` (paper Fig. 2).

    ``block_8`` sees the 8x8 masked face. Every later block sees the previous block's output, upscaled 2x
    by a learned pixel-shuffle layer, concatenated in depth with the masked face at its own resolution.
    At every block the face pixels of the output are replaced by the input's.
    """

    def __init__(self, config: CascadeConfig | None = None):
        super().__init__()
        self.config = config = config or CascadeConfig()
        self.blocks = nn.ModuleDict(
            {str(r): GeneratorBlock(r, config.block_in_channels(r), config.widths) for r in config.resolutions}
        )
        self.upsample = nn.ModuleDict(
            {str(r): PixelShuffleUp(3, config.upsample_channels, activation=False) for r in config.resolutions[1:]}
        )
        he_init(self.upsample)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return self.config.resolutions

    def forward(
        self,
        levels: dict[int, tuple[torch.Tensor, torch.Tensor]],
        upto: int | None = None,
        fade: float = 1.0,
        generator: torch.Generator | None = None,
        noise: dict[int, torch.Tensor] | None = None,
    ) -> dict[int, torch.Tensor]:
        """Run the blocks from the smallest resolution up to ``upto``.

        Args:
            levels: :func:`input_pyramid` output.
            upto: Last resolution to compute (default: the largest).
            fade: ProGAN fade-in weight of the last block, in [0, 1]: its output is blended with the
                upscaled previous output (1 = no blending).
            generator: RNG for the noise channels, if any (one draw for the whole batch).
            noise: The noise channels themselves, ``{N: [B, noise_channels, N, N]}`` for every computed block;
                overrides ``generator``. Lets a caller make each image's noise independent of its batch.

        Returns:
            ``{N: [B, 3, N, N] image in [-1, 1]}`` with the face pasted back, for every computed block.
        """
        upto = upto or self.resolutions[-1]
        outputs: dict[int, torch.Tensor] = {}
        previous = None
        for r in self.resolutions:
            if r > upto:
                break
            masked, mask = levels[r]
            parts = [masked]
            if self.config.mask_channel:
                parts.append(mask * 2 - 1)
            if self.config.noise_channels:
                shape = (masked.shape[0], self.config.noise_channels, r, r)
                if noise is None:
                    parts.append(torch.randn(shape, generator=generator, device=masked.device, dtype=masked.dtype))
                elif tuple(noise[r].shape) != shape:
                    raise ValueError(f"noise[{r}] must be {list(shape)}, got {list(noise[r].shape)}")
                else:
                    parts.append(noise[r].to(masked.device, masked.dtype))
            upscaled = None
            if previous is not None:
                upscaled = self.upsample[str(r)](previous)
                parts.insert(0, upscaled)
            out = self.blocks[str(r)](torch.cat(parts, dim=1))
            if r == upto and fade < 1.0 and previous is not None:
                out = fade * out + (1 - fade) * F.interpolate(previous, scale_factor=2, mode="nearest")
            out = paste_face(out, masked, mask)
            outputs[r] = previous = out
        return outputs


class Discriminators(nn.Module):
    """One :class:`Discriminator` per block."""

    def __init__(self, config: CascadeConfig):
        super().__init__()
        self.nets = nn.ModuleDict(
            {str(r): Discriminator(r, config.d_widths, config.d_norm) for r in config.resolutions}
        )

    def forward(self, images: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {r: self.nets[str(r)](x) for r, x in images.items()}

    def __getitem__(self, resolution: int) -> Discriminator:
        return self.nets[str(resolution)]

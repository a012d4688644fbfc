"""Differentiable augmentation of the discriminators' inputs (DiffAugment; Zhao et al., NeurIPS 2020).

The same random transforms are applied to real and to generated images before every discriminator call, in the
discriminator step and in the generator step alike. They are differentiable, so the generator still learns through
them. Made for GANs trained on a few thousand images, where a discriminator otherwise memorises the real set.
Follows the authors' ``DiffAugment_pytorch.py`` (colour, translation, cutout) on images in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from augmentor.errors import InputError

POLICIES = ("color", "translation", "cutout")


def _rand(x: torch.Tensor, *shape: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per image."""
    return x + (_rand(x, x.shape[0], 1, 1, 1, generator=generator) - 0.5)


def saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each pixel's distance from its grey value by a factor in [0, 2) per image."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, x.shape[0], 1, 1, 1, generator=generator) * 2) + mean


def contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's distance from its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, x.shape[0], 1, 1, 1, generator=generator) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side in x and y, filling with zeros (mid-grey)."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (b, 1, 1), generator=generator, device=x.device)
    tx = torch.randint(-sx, sx + 1, (b, 1, 1), generator=generator, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + ty + 1, 0, h + 1)  # [B, H, W] rows of the 1-padded image
    gx = torch.clamp(gx[None] + tx + 1, 0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))  # [B, C, H + 2, W + 2], a zero border to shift in
    flat = padded.flatten(2)  # [B, C, (H + 2) * (W + 2)]
    index = (gy * (w + 2) + gx).flatten(1)[:, None].expand(-1, x.shape[1], -1)
    return flat.gather(2, index).view_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one square of ``ratio`` of the side per image, at a random place (it may overhang the edge)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside_y = (gy[None] >= oy - ch // 2) & (gy[None] < oy - ch // 2 + ch)
    inside_x = (gx[None] >= ox - cw // 2) & (gx[None] < ox - cw // 2 + cw)
    keep = ~(inside_y & inside_x)  # [B, H, W]
    return x * keep[:, None].to(x.dtype)


_TRANSFORMS: dict[str, tuple[Callable, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")``; raises ValueError on an unknown name."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in _TRANSFORMS]
    if unknown:
        raise InputError(f"unknown DiffAugment policy {unknown}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``policy`` (comma-separated names from :data:`POLICIES`) to ``[B, C, H, W]`` images; '' is a no-op."""
    for name in parse_policy(policy):
        for transform in _TRANSFORMS[name]:
            x = transform(x, generator=generator)
    return x

"""Architecture settings of the cascade, saved with every checkpoint so loading never needs CLI flags."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from augmentor.errors import InputError

RESOLUTIONS = (8, 16, 32, 64, 128)

# Feature width at each spatial resolution inside a block, keyed like rosinality's stylegan2 `channels`.
PAPER_WIDTHS = {4: 512, 8: 512, 16: 512, 32: 256, 64: 128, 128: 64}  # the paper's 64...512
DEFAULT_WIDTHS = {4: 128, 8: 128, 16: 128, 32: 128, 64: 64, 128: 32}  # half width at 32-128, capped at 128: 15M params
DISCRIMINATOR_WIDTHS = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 32}


@dataclass
class CascadeConfig:
    """Generator and discriminator shapes."""

    resolutions: tuple[int, ...] = RESOLUTIONS  # one GAN block per resolution, smallest first
    widths: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_WIDTHS))  # generator width per resolution
    d_widths: dict[int, int] = field(default_factory=lambda: dict(DISCRIMINATOR_WIDTHS))  # discriminator widths
    mask_channel: bool = False  # also feed the mask as an input channel (the paper feeds the masked face only)
    noise_channels: int = 0  # extra N(0, 1) input channels for diverse outputs (0: deterministic, as the paper)
    upsample_channels: int = 3  # channels of the learned pixel-shuffle upscaling between blocks
    d_norm: str = "spectral"  # discriminator weight normalisation: spectral (Miyato et al. 2018) or none

    def __post_init__(self) -> None:
        self.resolutions = tuple(int(r) for r in self.resolutions)
        self.widths = {int(k): int(v) for k, v in self.widths.items()}
        self.d_widths = {int(k): int(v) for k, v in self.d_widths.items()}
        res = self.resolutions
        if not res or any(r < 8 or r & (r - 1) for r in res) or any(b != 2 * a for a, b in itertools.pairwise(res)):
            raise InputError(f"resolutions must be successive powers of two from 8 up, got {res}")
        needed = [r for r in (4, *res) if r <= res[-1]]
        for name, widths in (("widths", self.widths), ("d_widths", self.d_widths)):
            missing = [r for r in range(2, 20) if 2**r in needed and 2**r not in widths]
            if missing:
                raise InputError(f"{name} lacks resolution(s) {[2**r for r in missing]}")
        if self.d_norm not in ("none", "spectral"):
            raise InputError(f"d_norm must be 'none' or 'spectral', got {self.d_norm!r}")
        if self.noise_channels < 0 or self.upsample_channels < 1:
            raise InputError("noise_channels must be >= 0 and upsample_channels >= 1")

    def block_in_channels(self, resolution: int) -> int:
        """Input channels of ``block_N``: masked face (+ mask) (+ noise) (+ upscaled previous output)."""
        channels = 3 + int(self.mask_channel) + self.noise_channels
        return channels + (self.upsample_channels if resolution != self.resolutions[0] else 0)

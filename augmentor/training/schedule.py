"""The ProGAN-style growth schedule of the progressive regime."""

from __future__ import annotations

from augmentor.errors import InputError


def progressive_stage(
    epoch: int, progress: float, resolutions: tuple[int, ...], stage_epochs: int, fade_fraction: float = 0.5
) -> tuple[int, float]:
    """The active resolution and fade-in weight at a point of training.

    Stage k trains ``block_{resolutions[k]}`` (and the blocks below it) for ``stage_epochs`` epochs; the last
    stage lasts until training ends. During the first ``fade_fraction`` of every stage but the first, the new
    block's output is blended with the upscaled output below it, its weight rising linearly from 0 to 1.

    Args:
        epoch: 0-based epoch.
        progress: Fraction of this epoch done, in [0, 1).
        resolutions: Block resolutions, smallest first.
        stage_epochs: Epochs per stage (>= 1).
        fade_fraction: Share of a stage spent fading in (0 = no fade).

    Returns:
        ``(resolution, fade)`` with fade in [0, 1].
    """
    if stage_epochs < 1:
        raise InputError("stage_epochs must be >= 1")
    stage = min(epoch // stage_epochs, len(resolutions) - 1)
    if stage == 0 or fade_fraction <= 0:
        return resolutions[stage], 1.0
    into_stage = (epoch - stage * stage_epochs + progress) / stage_epochs
    return resolutions[stage], min(1.0, into_stage / fade_fraction)

"""Network interpolation between two generators of one architecture (Wang et al. 2018, ESRGAN, section 3.4).

A GAN fine-tune trades structure (SSIM) for texture (SWD). ESRGAN's remedy is to blend the parameters of the
structure-oriented network and its adversarially fine-tuned copy, ``base + alpha * (tuned - base)``, which gives a
smooth trade-off without training again; ``alpha`` is chosen on validation faces
(``benchmarks/select_generator.py``). The base may lack the tuned model's noise inputs: its stems are grown with
zero weights for them (:func:`augmentor.training.checkpoints.load_weights`), which is how the fine-tune started.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from augmentor.config import from_dict
from augmentor.errors import InputError
from augmentor.models import Cascade, CascadeConfig
from augmentor.training.checkpoints import load_generator, load_weights

log = logging.getLogger(__name__)


def blend_states(
    base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``base + alpha * (tuned - base)`` for every floating tensor; other tensors (counters) come from ``tuned``.

    Raises:
        InputError: the two states do not hold the same tensors with the same shapes, or ``alpha`` is not finite.
    """
    if not math.isfinite(alpha):
        raise InputError(f"alpha must be a finite number, got {alpha}")
    if set(base) != set(tuned):
        raise InputError(f"the two generators hold different tensors: {sorted(set(base) ^ set(tuned))[:3]}")
    blended = {}
    for name, value in tuned.items():
        other = base[name]
        if other.shape != value.shape:
            raise InputError(f"{name}: shape {tuple(other.shape)} in the base, {tuple(value.shape)} in the tuned model")
        if value.is_floating_point():
            blended[name] = other.float() + alpha * (value.float() - other.float())
        else:
            blended[name] = value.clone()
    return blended


def base_state(base: str | Path, architecture: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``base``'s weights in the cascade ``architecture`` describes (float32), its stems grown with zero weights
    for noise inputs it lacks.

    Raises:
        FileNotFoundError: a checkpoint file is missing.
        InputError: ``base`` differs from ``architecture`` in anything but the noise inputs.
    """
    model = Cascade(from_dict(CascadeConfig, architecture, "architecture"))
    try:
        load_weights(model, base, grow_inputs=True)
    except (RuntimeError, ValueError) as exc:  # load_state_dict raises RuntimeError on a shape mismatch
        raise InputError(f"{base} cannot be blended with this architecture: {exc}") from exc
    return model.state_dict()


def interpolate_generators(base: str | Path, tuned: str | Path, alpha: float) -> tuple[Cascade, dict[str, Any]]:
    """Load two checkpoint folders and blend them: ``alpha`` 0 is ``base``, 1 is ``tuned``.

    The result has ``tuned``'s architecture (and config); ``base`` is loaded into that architecture, its
    stems grown with zero weights if ``tuned`` has noise inputs that ``base`` lacks.

    Returns:
        ``(model, config)``: the blended cascade (float32, eval mode) and ``tuned``'s config with an
        ``interpolation`` entry (``base``, ``tuned``, ``alpha``).

    Raises:
        FileNotFoundError: a checkpoint file is missing.
        InputError: the two generators differ in anything but the noise inputs.
    """
    tuned_model, config = load_generator(tuned, "cpu")
    try:
        base_weights = base_state(base, config["architecture"])
    except ValueError as exc:
        raise InputError(f"{base} cannot be blended with {tuned}: {exc}") from exc
    tuned_model.load_state_dict(blend_states(base_weights, tuned_model.state_dict(), alpha))
    config = dict(config)
    config["interpolation"] = {"base": str(base), "tuned": str(tuned), "alpha": alpha}
    log.info("blended %s and %s at alpha %.3f", base, tuned, alpha)
    return tuned_model.eval(), config

"""Inference: hallucinate context and background around masked faces with a trained cascade."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from augmentor.layout import CONFIG_FILE
from augmentor.models import input_pyramid
from augmentor.precision import autocast, pick_device, resolve_precision
from augmentor.training.checkpoints import load_generator
from augmentor.training.data import to_model_range, to_uint8

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "cascade128"


def default_weights() -> Path:
    """The folder of the shipped default model.

    Raises:
        FileNotFoundError: it is missing from this install (the message says how to get it).
    """
    if not (DEFAULT_WEIGHTS / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"the shipped default model is missing from this install ({DEFAULT_WEIGHTS}): reinstall augmentor from "
            "a full clone, or pass the checkpoint/ folder of an `augmentor train` run"
        )
    return DEFAULT_WEIGHTS


class Hallucinator:
    """A trained cascade ready for inference.

    Example::

        hal = Hallucinator.from_pretrained("runs/00001-cascade/checkpoint")
        images = hal(face.masked, face.mask)  # [128, 128, 3] uint8, face pixels identical to the input's
    """

    def __init__(
        self, model, config: dict, device: str | torch.device = "cpu", batch_size: int = 64, precision: str = "fp32"
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, self.device)  # fp32 or bf16, never auto: what runs

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str = "auto", batch_size: int = 64, precision: str = "fp32"
    ) -> Hallucinator:
        """Load a checkpoint folder (``model.safetensors`` + ``config.json``).

        Args:
            path: Checkpoint folder; None loads the weights shipped in the package.
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
            batch_size: Faces per forward pass.
            precision: ``fp32`` (the default: figures that do not depend on the instruction set), ``bf16``
                (autocast), or ``auto``: bf16 where the device runs it natively, else fp32 (the one meaning of
                :func:`augmentor.precision.resolve_precision`). :attr:`precision` holds the resolved value.

        Raises:
            FileNotFoundError: no checkpoint there (the message says how to get one).
            ValueError: unknown precision.
        """
        path = Path(path) if path is not None else default_weights()
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"no augmentor checkpoint at {path} (pass the checkpoint/ folder of an `augmentor train` run)"
            )
        resolved = pick_device(device)
        model, config = load_generator(path, resolved)
        return cls(model, config, resolved, batch_size, precision)

    @property
    def resolution(self) -> int:
        return self.model.resolutions[-1]

    @property
    def noise_channels(self) -> int:
        """Noise input channels of the model; 0 means its output is fully determined by the input."""
        return self.model.config.noise_channels

    def noise(self, seeds: Sequence[int]) -> dict[int, torch.Tensor]:
        """Per-image noise inputs: image ``i``'s noise depends on ``seeds[i]`` alone, never on its batch.

        Drawn on the CPU (so every device sees the same numbers), one generator per image, block by block.

        Returns:
            ``{N: [B, noise_channels, N, N]}`` float32 on the model's device.
        """
        channels = self.noise_channels
        per_image = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(int(seed))
            per_image.append([torch.randn((channels, r, r), generator=generator) for r in self.model.resolutions])
        return {
            r: torch.stack([noise[i] for noise in per_image]).to(self.device)
            for i, r in enumerate(self.model.resolutions)
        }

    @torch.inference_mode()
    def hallucinate(
        self,
        masked: torch.Tensor,
        mask: torch.Tensor,
        all_levels: bool = False,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
    ):
        """Torch API.

        Args:
            masked: ``[B, 3, S, S]`` in [-1, 1] (pixels outside the mask are ignored).
            mask: ``[B, 1, S, S]`` in {0, 1}.
            all_levels: Return every block's output, not just the last.
            seed: Seed of the noise inputs, for models trained with noise channels (different seeds give
                different hallucinations; the same seed gives the same). One draw for the whole batch, so an
                image's noise depends on its place in the batch.
            seeds: One seed per image instead (see :meth:`noise`): an image gets the same noise whatever batch
                it is in. Excludes ``seed``.

        Returns:
            ``[B, 3, S, S]`` in [-1, 1], or ``{N: [B, 3, N, N]}`` if ``all_levels``.
        """
        size = self.resolution
        if masked.ndim != 4 or masked.shape[1:] != (3, size, size) or mask.shape != (masked.shape[0], 1, size, size):
            raise ValueError(
                f"expected masked [B, 3, {size}, {size}] and mask [B, 1, {size}, {size}], "
                f"got {tuple(masked.shape)} and {tuple(mask.shape)}"
            )
        if seeds is not None and (seed is not None or len(seeds) != masked.shape[0]):
            raise ValueError(f"give seed or one seed per image, got seed={seed} and {len(seeds)} seeds")
        generator = torch.Generator(self.device).manual_seed(seed if seed is not None else 0)
        outs: list[dict[int, torch.Tensor]] = []
        for start in range(0, masked.shape[0], self.batch_size):
            m = masked[start : start + self.batch_size].to(self.device, torch.float32)
            k = mask[start : start + self.batch_size].to(self.device, torch.float32)
            noise = None
            if seeds is not None and self.noise_channels:
                noise = self.noise(seeds[start : start + self.batch_size])
            with autocast(self.precision, self.device):
                levels = self.model(input_pyramid(m, k, self.model.resolutions), generator=generator, noise=noise)
            outs.append({r: v.float() for r, v in levels.items()} if all_levels else {size: levels[size].float()})
        merged = {r: torch.cat([o[r] for o in outs]) for r in outs[0]}
        return merged if all_levels else merged[size]

    def __call__(
        self, masked, mask, all_levels: bool = False, seed: int | None = None, seeds: Sequence[int] | None = None
    ):
        """Hallucinate around numpy or torch inputs; returns the same kind.

        numpy: ``masked`` ``[B, S, S, 3]`` or ``[S, S, 3]`` uint8 and ``mask`` ``[B, S, S]`` / ``[S, S]`` (any
        nonzero = face) give uint8 images whose face pixels equal ``masked``'s exactly. torch: see
        :meth:`hallucinate`, which also explains ``seed`` and ``seeds``.
        """
        if isinstance(masked, torch.Tensor):
            return self.hallucinate(masked, mask, all_levels, seed, seeds)
        masked, mask = np.asarray(masked), np.asarray(mask)
        single = masked.ndim == 3
        if single:
            masked, mask = masked[None], mask[None]
        if masked.dtype != np.uint8 or masked.ndim != 4 or masked.shape[-1] != 3 or mask.shape != masked.shape[:3]:
            raise ValueError(
                f"expected uint8 masked [B, S, S, 3] and mask [B, S, S], got {masked.shape} "
                f"{masked.dtype} and {mask.shape}"
            )
        images = torch.from_numpy(np.ascontiguousarray(masked)).permute(0, 3, 1, 2)
        masks = torch.from_numpy((mask > 0).astype(np.uint8))[:, None]
        image, binary = to_model_range(images, masks)
        result = self.hallucinate(image, binary, all_levels, seed, seeds)

        def to_numpy(x: torch.Tensor) -> np.ndarray:
            out = to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
            return out[0] if single else out

        return {r: to_numpy(v) for r, v in result.items()} if all_levels else to_numpy(result)

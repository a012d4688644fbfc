"""The trainer's validation: loss terms, realism and structure on the held-out identities, and sample grids."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from augmentor.training.data import FaceSet, batches, to_uint8
from augmentor.training.losses import CascadeLoss, g_ssim
from augmentor.visualize import cascade_grid, save_png

if TYPE_CHECKING:
    from augmentor.models import Cascade
    from augmentor.training.train_config import TrainConfig


class ValidatedTrainer(Protocol):
    """What the validation methods read of their trainer: its whole interface to them."""

    cfg: TrainConfig
    device: torch.device
    generator: Cascade
    loss: CascadeLoss
    train_set: FaceSet
    val_set: FaceSet | None

    @property
    def autocast(self) -> contextlib.AbstractContextManager: ...

    def loss_resolutions(self, top: int) -> tuple[int, ...]: ...

    def _inputs(self, images: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None) -> tuple: ...


class ValidationMixin:
    """Methods of :class:`augmentor.training.loop.Trainer` that score and show the validation faces; they use only
    what :class:`ValidatedTrainer` declares."""

    @torch.no_grad()
    def validate(self: ValidatedTrainer, top: int) -> dict[str, float]:
        """Mean generator terms (no adversarial term) over the validation identities."""
        if self.val_set is None:
            return {}
        sums: dict[str, float] = {}
        count = 0
        keep = self.loss_resolutions(top)
        for idx in batches(
            len(self.val_set), self.cfg.val_batch_size, torch.Generator(), shuffle=False, drop_last=False
        ):
            images, masks = self.val_set.images[idx].to(self.device), self.val_set.masks[idx].to(self.device)
            levels, reals, valids = self._inputs(images, masks, self.val_set.valid[idx].to(self.device))
            with self.autocast:
                outputs = self.generator(levels, upto=top, generator=torch.Generator(self.device).manual_seed(0))
            total, logs = self.loss.generator(
                {r: outputs[r] for r in keep}, {r: reals[r] for r in keep}, None, {r: valids[r] for r in keep}
            )
            n = len(idx)
            count += n
            for k, v in {**logs, "loss": total}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
        return {k: v / count for k, v in sums.items()}

    @torch.no_grad()
    def quality(self: ValidatedTrainer) -> dict[str, float]:
        """Realism and structure of the 128 px output on the validation faces that lie wholly inside their photo.

        ``swd_N``: multi-scale sliced Wasserstein distance x 1e3 against the same faces' originals, per pyramid level
        (lower is more realistic texture); ``ssim``: whole-image SSIM as the training loss computes it
        (torchmetrics, fp32, padded border included: a training signal, not the evaluation's scikit-image SSIM). Empty without
        validation faces.
        """
        from augmentor.evaluation.swd import multiscale_swd

        if self.val_set is None:
            return {}
        inside = self.val_set.inside_photo()
        if len(inside) < 8:
            return {}
        fakes, ssim_sum = [], 0.0
        top = self.cfg.model.resolutions[-1]
        for start in range(0, len(inside), self.cfg.val_batch_size):
            idx = inside[start : start + self.cfg.val_batch_size]
            images, masks = self.val_set.images[idx].to(self.device), self.val_set.masks[idx].to(self.device)
            levels, reals, _ = self._inputs(images, masks)
            with self.autocast:
                out = self.generator(levels, generator=torch.Generator(self.device).manual_seed(0))[top]
            out = to_uint8(out)  # [B, 3, S, S], as it would be written
            ssim_sum += (1 - float(g_ssim(out.float() / 127.5 - 1, reals[top]))) * len(idx)
            fakes.append(out.cpu())
        fake = torch.cat(fakes).permute(0, 2, 3, 1).numpy()
        real = self.val_set.images[inside].permute(0, 2, 3, 1).numpy()
        swd = multiscale_swd(real, fake, seed=0)
        return {"num_faces": len(inside), "ssim": ssim_sum / len(inside), **{f"swd_{r}": v for r, v in swd.items()}}

    @torch.no_grad()
    def sample_grid(self: ValidatedTrainer, top: int, path: Path) -> Path | None:
        source = self.val_set if self.val_set is not None else self.train_set
        # One face per identity first, so the grid shows variety.
        firsts = sorted({ident: i for i, ident in reversed(list(enumerate(source.identities)))}.values())
        taken = set(firsts)
        rest = [i for i in range(len(source)) if i not in taken]
        idx = torch.as_tensor((firsts + rest)[: self.cfg.num_samples])
        images, masks = source.images[idx].to(self.device), source.masks[idx].to(self.device)
        levels, reals, _ = self._inputs(images, masks)
        with self.autocast:
            outputs = self.generator(levels, upto=top, generator=torch.Generator(self.device).manual_seed(0))
        size = self.cfg.model.resolutions[-1]

        def to_numpy(x: torch.Tensor) -> np.ndarray:
            return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()

        grid = cascade_grid(
            to_numpy(levels[size][0]), {r: to_numpy(o) for r, o in outputs.items()}, to_numpy(reals[size])
        )
        return save_png(grid, path)

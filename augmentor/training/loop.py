"""Training of the cascade (all blocks every step) and of its progressive (ProGAN-style) variant.

``train(cfg, run_dir)`` writes to ``run_dir``:
``train_config.json`` (before any work), ``metrics.jsonl`` (a line per epoch), ``samples/epoch_NNNN.png``,
``loss_curves.png``, ``checkpoint/`` (the generator: safetensors + config.json, the best validation epoch),
``last/`` (the generator of the last epoch) and ``resume/`` (discriminators, optimisers, counters).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.profiler import record_function

from augmentor.atomic import write_text
from augmentor.config import to_dict
from augmentor.errors import InputError
from augmentor.locking import output_lock
from augmentor.models import Cascade, Discriminators, image_pyramid, input_pyramid
from augmentor.precision import autocast, native_bf16, pick_device
from augmentor.training import run_state
from augmentor.training.checkpoints import load_generator, load_weights, save_generator
from augmentor.training.data import (
    FaceSet,
    batches,
    load_faces,
    mirror,
    split_by_identity,
    to_model_range,
)
from augmentor.training.diffaugment import diff_augment
from augmentor.training.losses import CascadeLoss, d_r1, g_adversarial, g_mode_seeking
from augmentor.training.run_state import RunCounters, epoch_seed
from augmentor.training.schedule import progressive_stage
from augmentor.training.train_config import CONFIG_NAME, TrainConfig, adam, load_train_config
from augmentor.training.validation import ValidationMixin
from augmentor.visualize import plot_gan_curves, plot_loss_curves

log = logging.getLogger(__name__)

DISCRIMINATORS_FILE = "discriminators.safetensors"  # in resume/


@dataclass
class EpochResult:
    """What one pass over the training faces did."""

    epoch: int  # its index (0-based)
    train: dict[str, float]  # mean of each logged term over the steps that measured it
    steps: int
    seconds: float
    out_of_time: bool  # the time budget ran out during it


class Trainer(ValidationMixin):
    """One training run. Build with a config and a run folder; call :meth:`fit`."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, faces: FaceSet | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.faces = faces if faces is not None else load_faces(cfg.data)
        train_idx, val_idx = split_by_identity(self.faces.identities, cfg.data.val_fraction, cfg.seed)
        if len(train_idx) < cfg.batch_size:
            raise InputError(f"only {len(train_idx)} training faces for batch size {cfg.batch_size}")
        self.train_set = self.faces.subset(train_idx)
        self.val_set = self.faces.subset(val_idx) if len(val_idx) else None
        self.generator = Cascade(cfg.model).to(self.device)
        self.discriminators = Discriminators(cfg.model).to(self.device)
        self.bf16 = cfg.bf16 and native_bf16(self.device)
        self.loss = CascadeLoss(cfg.loss, bf16=self.bf16).to(self.device)
        self.channels_last = cfg.channels_last
        if self.channels_last:
            for m in (self.generator, self.discriminators, self.loss):
                m.to(memory_format=torch.channels_last)
        self.opt_g = adam(self.generator.parameters(), cfg.lr_g, cfg.betas, cfg.fused_adam)
        self.opt_d = adam(self.discriminators.parameters(), cfg.lr_d, cfg.betas, cfg.fused_adam)
        self.counters = RunCounters()
        # The training faces live on the device as uint8: one gather per batch, no loader processes.
        self.train_images = self.train_set.images.to(self.device)
        self.train_masks = self.train_set.masks.to(self.device)
        self.train_valid = self.train_set.valid.to(self.device)

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        """A fresh bf16 autocast for the networks where the device runs bf16 natively (losses opt out inside)."""
        return autocast("bf16" if self.bf16 else "fp32", self.device)

    # --- schedule ---------------------------------------------------------------------------------------------
    def active(self, epoch: int, progress: float) -> tuple[int, float]:
        """(top resolution, fade) for this point of training."""
        cfg = self.cfg
        if cfg.regime == "cascade":
            return cfg.model.resolutions[-1], 1.0
        return progressive_stage(epoch, progress, cfg.model.resolutions, cfg.stage_epochs, cfg.fade_fraction)

    def loss_resolutions(self, top: int) -> tuple[int, ...]:
        """Blocks that get losses: all of them (cascade) or only the top one (progressive)."""
        if self.cfg.regime == "cascade":
            return self.cfg.model.resolutions
        return (top,)

    # --- one step ---------------------------------------------------------------------------------------------
    def _inputs(self, images: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None):
        """Input pyramid, ground-truth pyramid and validity pyramid (a level's pixel is valid if all it covers is)."""
        image, mask = to_model_range(images, masks)  # [B, 3, S, S] in [-1, 1], [B, 1, S, S]
        valid = torch.ones_like(mask) if valid is None else valid.float()
        if self.channels_last:
            image, mask, valid = (x.contiguous(memory_format=torch.channels_last) for x in (image, mask, valid))
        res = self.cfg.model.resolutions
        size = image.shape[-1]
        valids = {r: valid if r == size else -F.max_pool2d(-valid, size // r) for r in res}
        return input_pyramid(image * mask, mask, res), image_pyramid(image, res), valids

    def _noise(self, batch: int, top: int, rng: torch.Generator) -> dict[int, torch.Tensor] | None:
        channels = self.cfg.model.noise_channels
        if not channels:
            return None
        res = [r for r in self.cfg.model.resolutions if r <= top]
        return {r: torch.randn(batch, channels, r, r, generator=rng, device=self.device) for r in res}

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.cfg.loss.diffaugment) if self.cfg.loss.diffaugment else x

    def adversarial_blocks(self, keep: tuple[int, ...]) -> tuple[int, ...]:
        """The loss blocks that have a discriminator."""
        lc = self.cfg.loss
        return tuple(r for r in keep if r >= lc.adversarial_from) if lc.adversarial > 0 else ()

    def train_step(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        top: int,
        fade: float,
        noise: torch.Generator,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One discriminator and one generator update on a uint8 batch; ``valid`` is 0 beyond the photo's edge."""
        lc = self.cfg.loss
        diverse = lc.diversity > 0 and self.cfg.model.noise_channels > 0 and images.shape[0] >= 2
        if diverse:  # mode seeking: the second half repeats the first half's faces with other noise
            half = images.shape[0] // 2
            images, masks = images[:half].repeat(2, 1, 1, 1), masks[:half].repeat(2, 1, 1, 1)
            valid = None if valid is None else valid[:half].repeat(2, 1, 1, 1)
        levels, reals, valids = self._inputs(images, masks, valid)
        keep = self.loss_resolutions(top)
        blocks = self.adversarial_blocks(keep)
        z = self._noise(images.shape[0], top, noise)
        # record_function labels name the parts of a step in a torch.profiler trace (benchmarks/profile_train_step.py)
        with record_function("g_forward"), self.autocast:
            outputs = self.generator(levels, upto=top, fade=fade, noise=z)
        fakes = {r: outputs[r] for r in keep}
        # Beyond the photo's edge the target is the fake's own pixels: no loss there, and for the discriminators'
        # real samples no real/fake cue. Computed once for both steps.
        targets = {r: torch.where(valids[r] > 0.5, reals[r], fakes[r].detach().float()) for r in keep}
        logs: dict[str, torch.Tensor] = {}
        if blocks:
            with record_function("d_step"):
                logs.update(self._discriminator_step(targets, fakes, blocks))
        self.discriminators.requires_grad_(False)  # the generator step needs no discriminator weight gradients
        with record_function("g_d_scores"), self.autocast:
            d_scores = {r: self.discriminators[r](self._augment(fakes[r])) for r in blocks}
        with record_function("g_losses"):
            g_total, g_logs = self.loss.generator(fakes, targets, d_scores or None)
            if diverse:
                half = images.shape[0] // 2
                out, zt = fakes[top].float(), z[top]
                ms = g_mode_seeking(out[:half], out[half:], zt[:half], zt[half:], lc.diversity_bound)
                g_total = g_total + lc.diversity * ms
                g_logs["ms"] = ms.detach()
        if blocks and self.counters.step % self.cfg.log_every == 0:
            with record_function("adv_grad_log"):
                logs.update(self._adversarial_gradients(fakes, d_scores))
        with record_function("g_backward_step"):
            self.opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            self.opt_g.step()
        self.discriminators.requires_grad_(True)
        logs.update(g_logs)
        logs["g_total"] = g_total.detach()
        self.counters.step += 1
        return logs

    def _discriminator_step(
        self, targets: dict[int, torch.Tensor], fakes: dict[int, torch.Tensor], blocks: tuple[int, ...]
    ) -> dict[str, torch.Tensor]:
        lc = self.cfg.loss
        lazy_r1 = lc.r1 > 0 and self.counters.step % lc.r1_every == 0
        reals_in = {r: targets[r].detach().requires_grad_(lazy_r1) for r in blocks}
        with self.autocast:
            d_real = {r: self.discriminators[r](self._augment(reals_in[r])) for r in blocks}
            d_fake = {r: self.discriminators[r](self._augment(fakes[r].detach())) for r in blocks}
        d_total, logs = self.loss.discriminator(d_real, d_fake)
        if lazy_r1:
            penalty = torch.stack([d_r1(d_real[r], reals_in[r]) for r in blocks]).sum()
            d_total = d_total + 0.5 * lc.r1 * lc.r1_every * penalty  # lazy: scaled by the interval
            logs["r1"] = penalty.detach()
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        self.opt_d.step()
        return logs

    def _adversarial_gradients(
        self, fakes: dict[int, torch.Tensor], d_scores: dict[int, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per block, the mean per-image norm of the adversarial term's gradient w.r.t. the generated image."""
        kind, target = self.cfg.loss.adversarial_kind, self.cfg.loss.lsgan_target
        logs = {}
        for r, score in d_scores.items():
            (grad,) = torch.autograd.grad(g_adversarial(kind, score.float(), target), fakes[r], retain_graph=True)
            logs[f"adv_grad_{r}"] = grad.float().flatten(1).norm(dim=1).mean().detach()
        return logs

    # --- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train until ``epochs``, the patience or the time budget runs out; return the best checkpoint folder."""
        deadline = None if self.cfg.max_minutes is None else time.monotonic() + 60.0 * self.cfg.max_minutes
        while self.counters.epoch < self.cfg.epochs:
            result = self.train_epoch(deadline)
            self.end_epoch(result)
            if result.out_of_time or (deadline is not None and time.monotonic() > deadline):
                log.info("time budget of %s min used up in epoch %d: stopping", self.cfg.max_minutes, result.epoch + 1)
                break
            if self.counters.patience_spent(self.cfg.patience):
                log.info("validation loss plateaued for %d epochs: stopping", self.counters.bad_epochs)
                break
        return self.finish()

    def steps_per_epoch(self) -> int:
        per_epoch = len(self.train_set) // self.cfg.batch_size
        return min(per_epoch, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else per_epoch

    def train_epoch(self, deadline: float | None = None) -> EpochResult:
        """One pass over the training faces in the epoch's seeded order (checks ``deadline`` after each step)."""
        from tqdm import tqdm

        cfg, epoch, per_epoch = self.cfg, self.counters.epoch, self.steps_per_epoch()
        data_rng = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        noise_rng = torch.Generator(self.device).manual_seed(epoch_seed(cfg.seed, epoch))
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # some terms (the adversarial gradient) are measured on some steps only
        steps, out_of_time, start = 0, False, time.perf_counter()
        bar = tqdm(total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)
        for i, idx in enumerate(batches(len(self.train_set), cfg.batch_size, data_rng)):
            if i >= per_epoch:
                break
            top, fade = self.active(epoch, i / per_epoch)
            idx = idx.to(self.device)
            images, masks, valid = self.train_images[idx], self.train_masks[idx], self.train_valid[idx]
            if cfg.data.mirror:
                images, masks, valid = mirror(images, masks, valid, generator=data_rng)
            logs = self.train_step(images, masks, top, fade, noise_rng, valid)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0) + v
                counts[k] = counts.get(k, 0) + 1
            steps += 1
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(g=f"{float(logs['g_total']):.3f}", res=top)
            # Checked after the step, so that every epoch trains at least once and its bookkeeping still runs.
            if deadline is not None and time.monotonic() > deadline:
                out_of_time = True
                break
        bar.close()
        train = {k: float(v) / counts[k] for k, v in sums.items()}
        return EpochResult(epoch, train, steps, time.perf_counter() - start, out_of_time)

    def end_epoch(self, result: EpochResult) -> dict:
        """Validate, count the epoch, save what it earned (best checkpoint, samples, resume state); its record."""
        cfg = self.cfg
        top, fade = self.active(result.epoch, 0.999)
        val = self.validate(top)
        val_loss = val.get("loss", result.train["g_total"])
        quality = self.quality() if top == cfg.model.resolutions[-1] else {}
        final_stage = top == cfg.model.resolutions[-1] and fade >= 1.0
        if self.counters.end_epoch(val_loss, cfg.min_delta, counts=final_stage):
            save_generator(self.generator, self.run_dir / "checkpoint", self._meta())
        epoch = self.counters.epoch
        record = {
            "epoch": epoch,
            "step": self.counters.step,
            "regime": cfg.regime,
            "resolution": top,
            "fade": fade,
            "train": result.train,
            "val": val,
            "val_loss": val_loss,
            "quality": quality,
            "epoch_steps": result.steps,
            "out_of_time": result.out_of_time,
            "seconds": round(result.seconds, 3),
            "images_per_second": round(result.steps * cfg.batch_size / result.seconds, 2),
        }
        run_state.append_metrics(self.run_dir, record)
        self.sample_grid(top, self.run_dir / "samples" / f"epoch_{epoch:04d}.png")
        if cfg.keep_every and epoch % cfg.keep_every == 0:
            save_generator(self.generator, self.run_dir / "epochs" / f"epoch_{epoch:04d}", self._meta())
        self.save_resume()
        log.info("epoch %d: train g %.4f, val %.4f, %.1f img/s", epoch, result.train["g_total"], val_loss,
                 record["images_per_second"])  # fmt: skip
        return record

    def finish(self) -> Path:
        """The best checkpoint (the last generator if no epoch reached the top resolution) and the curves."""
        if not (self.run_dir / "checkpoint").exists():  # e.g. progressive training that never reached the top
            save_generator(self.generator, self.run_dir / "checkpoint", self._meta())
        metrics_path = self.run_dir / run_state.METRICS_FILE
        plot_loss_curves(metrics_path, self.run_dir / run_state.LOSS_CURVES_FILE)
        plot_gan_curves(metrics_path, self.run_dir / "gan_curves.png")
        return self.run_dir / "checkpoint"

    # --- run state --------------------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "loss": to_dict(self.cfg.loss),
            "regime": self.cfg.regime,
            "data_fingerprint": self.faces.fingerprint,
            **self.counters.meta(),
            "init_from": self.cfg.init_from,  # epochs and steps count from there
        }

    def save_resume(self) -> None:
        """Replace ``last/`` (the generator) and ``resume/`` (discriminators, optimisers, counters) together."""
        d_state = {k: v.detach().cpu().contiguous() for k, v in self.discriminators.state_dict().items()}
        run_state.save_resume(
            self.run_dir,
            self.counters,
            lambda folder: save_generator(self.generator, folder, self._meta()),
            {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()},
            {DISCRIMINATORS_FILE: lambda path: save_file(d_state, str(path))},
        )

    def load_resume(self) -> None:
        """Continue after the last finished epoch (``last/`` and ``resume/``, checked to be of the same epoch)."""
        self.counters, state = run_state.load_resume(self.run_dir, self.device)
        generator, _ = load_generator(self.run_dir / "last", self.device)
        self.generator.load_state_dict(generator.state_dict())
        d_file = self.run_dir / "resume" / DISCRIMINATORS_FILE
        self.discriminators.load_state_dict(load_file(str(d_file), device=str(self.device)))
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        log.info("resumed %s at epoch %d (step %d)", self.run_dir, self.counters.epoch, self.counters.step)

    def load_init(self, source: Path) -> None:
        """Copy weights from ``source`` (see ``TrainConfig.init_from``); the architectures must match."""
        run = source if (source / "last").is_dir() else None
        generator_dir = source / "last" if run else source
        try:  # noise channels added on top of a deterministic model start at zero weight
            load_weights(self.generator, generator_dir, grow_inputs=self.cfg.model.noise_channels > 0)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RuntimeError: tensor shapes differ
            raise InputError(f"init_from {source}: cannot start this model from {generator_dir}: {exc}") from exc
        d_file = run / "resume" / DISCRIMINATORS_FILE if run else None
        with_d = d_file is not None and d_file.is_file()
        if with_d:
            try:
                self.discriminators.load_state_dict(load_file(str(d_file), device=str(self.device)))
            except RuntimeError as exc:  # another discriminator design (e.g. the old batch-norm one)
                log.warning("init_from %s: discriminators do not fit this design, starting them fresh (%s)", run, exc)
                with_d = False
        log.info("initialised from %s%s", generator_dir, " with its discriminators" if with_d else "")


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, faces: FaceSet | None = None) -> Path:
    """Train a cascade; returns the folder of the best generator checkpoint.

    Args:
        cfg: The run's settings.
        run_dir: Output folder. ``train_config.json`` is written before training starts.
        resume: Continue the run in ``run_dir`` from its last completed epoch.
        faces: Preloaded faces (tests); by default read from ``cfg.data.path``.

    Raises:
        augmentor.locking.FolderInUseError: another process is writing to ``run_dir``.
    """
    run_dir = Path(run_dir)
    with output_lock(run_dir, "augmentor train"):
        if not resume:
            write_text(run_dir / CONFIG_NAME, json.dumps(to_dict(cfg), indent=2))
        trainer = Trainer(cfg, run_dir, faces)
        if resume:
            trainer.load_resume()  # a resumed fine-tune no longer needs its init_from folder
        elif cfg.init_from is not None:
            trainer.load_init(Path(cfg.init_from))
        return trainer.fit()


__all__ = ["TrainConfig", "Trainer", "load_train_config", "train"]

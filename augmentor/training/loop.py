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
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from augmentor.config import from_dict, to_dict
from augmentor.models import Cascade, CascadeConfig, Discriminators, image_pyramid, input_pyramid
from augmentor.precision import pick_device
from augmentor.training.checkpoints import save_generator
from augmentor.training.data import (
    DataConfig,
    FaceSet,
    batches,
    load_faces,
    mirror,
    split_by_identity,
    to_model_range,
    to_uint8,
)
from augmentor.training.losses import CascadeLoss, LossConfig
from augmentor.training.schedule import progressive_stage
from augmentor.visualize import cascade_grid, plot_loss_curves, save_png

log = logging.getLogger(__name__)

CONFIG_NAME = "train_config.json"


@dataclass
class TrainConfig:
    """Everything a training run needs; saved to ``train_config.json`` and restored on resume."""

    data: DataConfig = field(default_factory=DataConfig)
    model: CascadeConfig = field(default_factory=CascadeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    regime: Literal["cascade", "progressive"] = "cascade"  # cascade: all blocks each step; progressive: ProGAN growth
    epochs: int = 50  # maximum epochs (paper: 50)
    stage_epochs: int = 10  # progressive only: epochs per resolution before growing
    fade_fraction: float = 0.5  # progressive only: share of a stage spent fading the new block in
    batch_size: int = 10  # paper: 10
    lr_g: float = 1e-4  # Adam learning rate of the generator
    lr_d: float = 2e-4  # Adam learning rate of the discriminators
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas
    patience: int = 5  # stop after this many epochs without validation improvement (0: never)
    min_delta: float = 1e-4  # smallest validation-loss decrease that counts as improvement
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # channels_last memory format on CUDA
    max_steps_per_epoch: int | None = None  # cap steps per epoch (smoke tests)
    max_minutes: float | None = None  # wall-clock budget of fit(): ends the epoch in which it runs out, then stops
    num_samples: int = 8  # validation faces in each epoch's sample grid
    # Fine-tuning: start from a generator checkpoint folder, or from a run folder (its last/ generator and, when
    # present, its resume/ discriminators). Optimisers, counters and the best validation loss start fresh.
    init_from: str | None = None
    val_batch_size: int = 32


class Trainer:
    """One training run. Build with a config and a run folder; call :meth:`fit`."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, faces: FaceSet | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = pick_device(cfg.device)
        cuda = self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        self.faces = faces if faces is not None else load_faces(cfg.data)
        train_idx, val_idx = split_by_identity(self.faces.identities, cfg.data.val_fraction, cfg.seed)
        if len(train_idx) < cfg.batch_size:
            raise ValueError(f"only {len(train_idx)} training faces for batch size {cfg.batch_size}")
        self.train_set = self.faces.subset(train_idx)
        self.val_set = self.faces.subset(val_idx) if len(val_idx) else None
        self.generator = Cascade(cfg.model).to(self.device)
        self.discriminators = Discriminators(cfg.model).to(self.device)
        self.loss = CascadeLoss(cfg.loss).to(self.device)
        if cuda and cfg.channels_last:
            for m in (self.generator, self.discriminators, self.loss):
                m.to(memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.discriminators.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.bf16 else contextlib.nullcontext()
        self.epoch = 0  # next epoch to run
        self.step = 0
        self.best = math.inf
        self.bad_epochs = 0
        # The training faces live on the device as uint8: one gather per batch, no loader processes.
        self.train_images = self.train_set.images.to(self.device)
        self.train_masks = self.train_set.masks.to(self.device)

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
    def _inputs(self, images: torch.Tensor, masks: torch.Tensor):
        image, mask = to_model_range(images, masks)  # [B, 3, S, S] in [-1, 1], [B, 1, S, S]
        if self.device.type == "cuda" and self.cfg.channels_last:
            image, mask = (
                image.contiguous(memory_format=torch.channels_last),
                mask.contiguous(memory_format=torch.channels_last),
            )
        res = self.cfg.model.resolutions
        return input_pyramid(image * mask, mask, res), image_pyramid(image, res)

    def train_step(self, images: torch.Tensor, masks: torch.Tensor, top: int, fade: float, noise: torch.Generator):
        levels, reals = self._inputs(images, masks)
        keep = self.loss_resolutions(top)
        use_d = self.cfg.loss.adversarial > 0
        with self.autocast:
            outputs = self.generator(levels, upto=top, fade=fade, generator=noise)
        fakes = {r: outputs[r] for r in keep}
        logs: dict[str, torch.Tensor] = {}
        if use_d:
            with self.autocast:
                d_real = {r: self.discriminators[r](reals[r]) for r in keep}
                d_fake = {r: self.discriminators[r](fakes[r].detach()) for r in keep}
                d_total, d_logs = self.loss.discriminator(d_real, d_fake)
            self.opt_d.zero_grad(set_to_none=True)
            d_total.backward()
            self.opt_d.step()
            logs.update(d_logs)
        with self.autocast:
            d_scores = {r: self.discriminators[r](fakes[r]) for r in keep} if use_d else None
            g_total, g_logs = self.loss.generator(fakes, {r: reals[r] for r in keep}, d_scores)
        self.opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        self.opt_g.step()
        logs.update(g_logs)
        logs["g_total"] = g_total.detach()
        self.step += 1
        return logs

    # --- validation and samples -------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, top: int) -> dict[str, float]:
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
            levels, reals = self._inputs(images, masks)
            with self.autocast:
                outputs = self.generator(levels, upto=top, generator=torch.Generator(self.device).manual_seed(0))
                total, logs = self.loss.generator({r: outputs[r] for r in keep}, {r: reals[r] for r in keep}, None)
            n = len(idx)
            count += n
            for k, v in {**logs, "loss": total}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
        return {k: v / count for k, v in sums.items()}

    @torch.no_grad()
    def sample_grid(self, top: int, path: Path) -> Path | None:
        source = self.val_set if self.val_set is not None else self.train_set
        # One face per identity first, so the grid shows variety.
        firsts = sorted({ident: i for i, ident in reversed(list(enumerate(source.identities)))}.values())
        taken = set(firsts)
        rest = [i for i in range(len(source)) if i not in taken]
        idx = torch.as_tensor((firsts + rest)[: self.cfg.num_samples])
        images, masks = source.images[idx].to(self.device), source.masks[idx].to(self.device)
        levels, reals = self._inputs(images, masks)
        with self.autocast:
            outputs = self.generator(levels, upto=top, generator=torch.Generator(self.device).manual_seed(0))
        size = self.cfg.model.resolutions[-1]

        def to_numpy(x: torch.Tensor) -> np.ndarray:
            return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()

        grid = cascade_grid(
            to_numpy(levels[size][0]), {r: to_numpy(o) for r, o in outputs.items()}, to_numpy(reals[size])
        )
        return save_png(grid, path)

    # --- checkpoints ------------------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "loss": to_dict(self.cfg.loss),
            "regime": self.cfg.regime,
            "data_fingerprint": self.faces.fingerprint,
            "epochs_trained": self.epoch,
            "steps": self.step,
            "best_val_loss": self.best,
            "init_from": self.cfg.init_from,  # epochs and steps count from there
        }

    def save_resume(self) -> None:
        resume = self.run_dir / "resume"
        resume.mkdir(parents=True, exist_ok=True)
        save_generator(self.generator, self.run_dir / "last", self._meta())
        d_state = {k: v.detach().cpu().contiguous() for k, v in self.discriminators.state_dict().items()}
        save_file(d_state, str(resume / ".discriminators.safetensors.tmp"))
        (resume / ".discriminators.safetensors.tmp").replace(resume / "discriminators.safetensors")
        state = {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "counters": torch.tensor([self.epoch, self.step, self.bad_epochs], dtype=torch.long),
            "best": torch.tensor(self.best, dtype=torch.float64),
        }
        torch.save(state, resume / ".state.pt.tmp")
        (resume / ".state.pt.tmp").replace(resume / "state.pt")

    def load_resume(self) -> None:
        from augmentor.training.checkpoints import load_generator

        generator, _ = load_generator(self.run_dir / "last", self.device)
        self.generator.load_state_dict(generator.state_dict())
        resume = self.run_dir / "resume"
        self.discriminators.load_state_dict(
            load_file(str(resume / "discriminators.safetensors"), device=str(self.device))
        )
        state = torch.load(resume / "state.pt", map_location=self.device, weights_only=True)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.epoch, self.step, self.bad_epochs = (int(v) for v in state["counters"])
        self.best = float(state["best"])
        log.info("resumed %s at epoch %d (step %d)", self.run_dir, self.epoch, self.step)

    def load_init(self, source: Path) -> None:
        """Copy weights from ``source`` (see ``TrainConfig.init_from``); the architectures must match."""
        from augmentor.training.checkpoints import load_weights

        run = source if (source / "last").is_dir() else None
        generator_dir = source / "last" if run else source
        try:
            load_weights(self.generator, generator_dir)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RuntimeError: tensor shapes differ
            raise ValueError(f"init_from {source}: cannot start this model from {generator_dir}: {exc}") from exc
        d_file = run / "resume" / "discriminators.safetensors" if run else None
        with_d = d_file is not None and d_file.is_file()
        if with_d:
            self.discriminators.load_state_dict(load_file(str(d_file), device=str(self.device)))
        log.info("initialised from %s%s", generator_dir, " with its discriminators" if with_d else "")

    # --- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        from tqdm import tqdm

        cfg = self.cfg
        per_epoch = len(self.train_set) // cfg.batch_size
        if cfg.max_steps_per_epoch:
            per_epoch = min(per_epoch, cfg.max_steps_per_epoch)
        metrics_path = self.run_dir / "metrics.jsonl"
        deadline = None if cfg.max_minutes is None else time.monotonic() + 60.0 * cfg.max_minutes
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            data_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)  # per epoch: resumable
            noise_rng = torch.Generator(self.device).manual_seed(cfg.seed * 1_000_003 + epoch)
            sums: dict[str, torch.Tensor] = {}
            steps, out_of_time = 0, False
            start = time.perf_counter()
            bar = tqdm(total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)
            for i, idx in enumerate(batches(len(self.train_set), cfg.batch_size, data_rng)):
                if i >= per_epoch:
                    break
                top, fade = self.active(epoch, i / per_epoch)
                idx = idx.to(self.device)
                images, masks = self.train_images[idx], self.train_masks[idx]
                if cfg.data.mirror:
                    images, masks = mirror(images, masks, data_rng)
                logs = self.train_step(images, masks, top, fade, noise_rng)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0) + v
                steps += 1
                bar.update(1)
                if i % 20 == 0:
                    bar.set_postfix(g=f"{float(logs['g_total']):.3f}", res=top)
                # Checked after the step, so that every epoch trains at least once and its bookkeeping still runs.
                if deadline is not None and time.monotonic() > deadline:
                    out_of_time = True
                    break
            bar.close()
            seconds = time.perf_counter() - start
            top, fade = self.active(epoch, 0.999)
            train_means = {k: float(v) / steps for k, v in sums.items()}
            val = self.validate(top)
            val_loss = val.get("loss", train_means["g_total"])
            self.epoch += 1
            final_stage = top == cfg.model.resolutions[-1] and fade >= 1.0
            improved = val_loss < self.best - cfg.min_delta
            if improved or not final_stage:
                self.best = min(self.best, val_loss) if final_stage else self.best
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
            if improved and final_stage:
                save_generator(self.generator, self.run_dir / "checkpoint", self._meta())
            record = {
                "epoch": self.epoch,
                "step": self.step,
                "regime": cfg.regime,
                "resolution": top,
                "fade": fade,
                "train": train_means,
                "val": val,
                "val_loss": val_loss,
                "epoch_steps": steps,
                "out_of_time": out_of_time,
                "seconds": round(seconds, 3),
                "images_per_second": round(steps * cfg.batch_size / seconds, 2),
            }
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            self.sample_grid(top, self.run_dir / "samples" / f"epoch_{self.epoch:04d}.png")
            self.save_resume()
            log.info(
                "epoch %d: train g %.4f, val %.4f, %.1f img/s",
                self.epoch,
                train_means["g_total"],
                val_loss,
                record["images_per_second"],
            )
            if out_of_time or (deadline is not None and time.monotonic() > deadline):
                log.info("time budget of %s min used up in epoch %d: stopping", cfg.max_minutes, self.epoch)
                break
            if cfg.patience and self.bad_epochs >= cfg.patience:
                log.info("validation loss plateaued for %d epochs: stopping", self.bad_epochs)
                break
        if not (self.run_dir / "checkpoint").exists():  # e.g. progressive training that never reached the top
            save_generator(self.generator, self.run_dir / "checkpoint", self._meta())
        plot_loss_curves(metrics_path, self.run_dir / "loss_curves.png")
        return self.run_dir / "checkpoint"


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, faces: FaceSet | None = None) -> Path:
    """Train a cascade; returns the folder of the best generator checkpoint.

    Args:
        cfg: The run's settings.
        run_dir: Output folder. ``train_config.json`` is written before training starts.
        resume: Continue the run in ``run_dir`` from its last completed epoch.
        faces: Preloaded faces (tests); by default read from ``cfg.data.path``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / CONFIG_NAME).write_text(json.dumps(to_dict(cfg), indent=2))
    trainer = Trainer(cfg, run_dir, faces)
    if resume:
        trainer.load_resume()  # a resumed fine-tune no longer needs its init_from folder
    elif cfg.init_from is not None:
        trainer.load_init(Path(cfg.init_from))
    return trainer.fit()


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The ``TrainConfig`` saved in a run folder."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a training run folder")
    return from_dict(TrainConfig, json.loads(path.read_text()))


__all__ = ["TrainConfig", "Trainer", "load_run_config", "train"]

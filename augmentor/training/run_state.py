"""The trainer's persistent state: the last generator, the discriminators and optimisers for resuming, and
initialisation from another run."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from augmentor.config import to_dict
from augmentor.training.checkpoints import save_generator

log = logging.getLogger(__name__)


class RunStateMixin:
    """Methods of :class:`augmentor.training.loop.Trainer` that save, resume and initialise a run."""

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
        try:  # noise channels added on top of a deterministic model start at zero weight
            load_weights(self.generator, generator_dir, grow_inputs=self.cfg.model.noise_channels > 0)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RuntimeError: tensor shapes differ
            raise ValueError(f"init_from {source}: cannot start this model from {generator_dir}: {exc}") from exc
        d_file = run / "resume" / "discriminators.safetensors" if run else None
        with_d = d_file is not None and d_file.is_file()
        if with_d:
            try:
                self.discriminators.load_state_dict(load_file(str(d_file), device=str(self.device)))
            except RuntimeError as exc:  # another discriminator design (e.g. the old batch-norm one)
                log.warning("init_from %s: discriminators do not fit this design, starting them fresh (%s)", run, exc)
                with_d = False
        log.info("initialised from %s%s", generator_dir, " with its discriminators" if with_d else "")

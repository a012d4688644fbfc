"""The training-run machinery shared by the cascade's :class:`~augmentor.training.loop.Trainer` and the recognition
fine-tuner (``recognition.finetune.Finetuner``): counters and early stopping, per-epoch seeds, ``metrics.jsonl``,
and crash-safe resume state.

A run folder holds ``last/`` (the model of the last finished epoch: a checkpoint folder whose ``config.json``
records ``epochs_trained`` and ``steps``) and ``resume/`` (``state.pt``: optimisers and counters, plus any files
the trainer adds). Both are replaced together, all or nothing (:func:`augmentor.atomic.replace_folders`), and a
resume checks that they come from the same epoch.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from augmentor.atomic import recover_folders, replace_folders
from augmentor.errors import InputError
from augmentor.layout import CONFIG_FILE

log = logging.getLogger(__name__)

LAST_DIR = "last"  # the model of the last finished epoch
RESUME_DIR = "resume"  # what else a resume needs
STATE_FILE = "state.pt"  # in resume/: optimiser states and the counters, loaded with weights_only=True
METRICS_FILE = "metrics.jsonl"  # one JSON line per finished epoch
LOSS_CURVES_FILE = "loss_curves.png"  # the curves of METRICS_FILE, redrawn every epoch
STAGE = ".saving"  # the staging folder of a save in progress
SEED_STRIDE = 1_000_003  # epoch seeds are seed * SEED_STRIDE + epoch: distinct per (seed, epoch), so resumable


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's data order and noise: a function of (run seed, epoch), so a resumed run replays it."""
    return seed * SEED_STRIDE + epoch


@dataclass
class RunCounters:
    """Where a run stands: what ``state.pt`` saves and a resume restores."""

    epoch: int = 0  # the next epoch to run (= epochs finished)
    step: int = 0  # optimiser steps taken
    bad_epochs: int = 0  # finished epochs since the last improvement of the validation loss
    best: float = math.inf  # the best validation loss so far; moves only on a gain of more than min_delta

    def end_epoch(self, val_loss: float, min_delta: float, counts: bool = True) -> bool:
        """Count a finished epoch; True when it improved on :attr:`best` by more than ``min_delta``.

        Args:
            val_loss: The epoch's validation loss.
            min_delta: The smallest decrease that counts as a gain.
            counts: False for an epoch whose loss is not comparable (a progressive stage below the top
                resolution): it neither improves nor spends patience.
        """
        self.epoch += 1
        if not counts:
            self.bad_epochs = 0
            return False
        if val_loss < self.best - min_delta:
            self.best, self.bad_epochs = val_loss, 0
            return True
        self.bad_epochs += 1
        return False

    def patience_spent(self, patience: int) -> bool:
        """Whether ``patience`` epochs in a row went without a gain (never with ``patience`` 0)."""
        return patience > 0 and self.bad_epochs >= patience

    def meta(self) -> dict[str, Any]:
        """The counters as ``config.json`` fields of a checkpoint (``best_val_loss`` None before any gain)."""
        best = self.best if math.isfinite(self.best) else None
        return {"epochs_trained": self.epoch, "steps": self.step, "best_val_loss": best}

    def to_state(self) -> dict[str, torch.Tensor]:
        return {
            "counters": torch.tensor([self.epoch, self.step, self.bad_epochs], dtype=torch.long),
            "best": torch.tensor(self.best, dtype=torch.float64),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunCounters:
        epoch, step, bad_epochs = (int(v) for v in state["counters"])
        return cls(epoch, step, bad_epochs, float(state["best"]))


def append_metrics(run_dir: Path, record: dict[str, Any]) -> Path:
    """Add one epoch's record to ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return path


def save_resume(
    run_dir: Path,
    counters: RunCounters,
    write_last: Callable[[Path], object],
    state: dict[str, Any],
    extra_files: dict[str, Callable[[Path], object]] | None = None,
) -> None:
    """Replace ``last/`` and ``resume/`` together, all or nothing.

    Args:
        run_dir: The run folder.
        counters: Saved in ``state.pt``; ``write_last`` must record them too (:meth:`RunCounters.meta`).
        write_last: Writes the model checkpoint into the folder it is given.
        state: Optimiser (and scheduler) states for ``state.pt``.
        extra_files: ``{file name: writer}`` of more files in ``resume/`` (the discriminators).
    """

    def write_resume(folder: Path) -> None:
        folder.mkdir(parents=True)
        torch.save({**state, **counters.to_state()}, folder / STATE_FILE)
        for name, write in (extra_files or {}).items():
            write(folder / name)

    replace_folders(run_dir, {LAST_DIR: write_last, RESUME_DIR: write_resume}, stage_name=STAGE)


def settle(run_dir: Path) -> bool:
    """Finish or drop a save that a crash interrupted (what :func:`load_resume` does first); True if there was one.

    Where several processes resume one run (data-parallel workers), one of them settles it before the others start.
    """
    if recover_folders(run_dir, STAGE):
        log.info("%s: settled the save that a crash interrupted", run_dir)
        return True
    return False


def load_resume(run_dir: Path, device: torch.device | str) -> tuple[RunCounters, dict[str, Any]]:
    """The counters and the saved ``state.pt`` of a run, after checking that ``last/`` is of the same epoch.

    Raises:
        FileNotFoundError: no resume state in ``run_dir``.
        InputError: ``last/`` and ``resume/`` disagree (a folder written by an older augmentor and killed mid-save).
    """
    run_dir = Path(run_dir)
    settle(run_dir)
    path = run_dir / RESUME_DIR / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no finished epoch to resume from in {run_dir}")
    state = torch.load(path, map_location=device, weights_only=True)
    counters = RunCounters.from_state(state)
    config_path = run_dir / LAST_DIR / CONFIG_FILE
    last = json.loads(config_path.read_text()) if config_path.is_file() else {}
    found = (last.get("epochs_trained"), last.get("steps"))
    if found != (counters.epoch, counters.step):
        raise InputError(
            f"{run_dir}: {LAST_DIR}/ holds epoch {found[0]} (step {found[1]}) but {RESUME_DIR}/{STATE_FILE} epoch "
            f"{counters.epoch} (step {counters.step}): a save was interrupted; start a new run, or use "
            f"{LAST_DIR}/ as init_from"
        )
    return counters, state

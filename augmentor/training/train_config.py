"""The settings of a training run of the cascade: ``train_config.json`` in every run folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from augmentor.config import from_dict
from augmentor.models import CascadeConfig
from augmentor.training.data import DataConfig
from augmentor.training.losses import LossConfig

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
    bf16: bool = True  # bf16 autocast of every network on CUDA and on CPUs with native bf16; losses stay fp32
    channels_last: bool = True  # channels_last memory format for every network and input (CPU and CUDA)
    fused_adam: bool = True  # Adam's fused kernel where torch has one for the device
    log_every: int = 50  # steps between measurements of the adversarial gradient reaching the generator
    keep_every: int = 0  # also keep the generator of every N-th epoch in epochs/ (0: none), to pick one later
    max_steps_per_epoch: int | None = None  # cap steps per epoch (smoke tests)
    max_minutes: float | None = None  # wall-clock budget of fit(): ends the epoch in which it runs out, then stops
    num_samples: int = 8  # validation faces in each epoch's sample grid
    # Fine-tuning: start from a generator checkpoint folder, or from a run folder (its last/ generator and, when
    # present, its resume/ discriminators). Optimisers, counters and the best validation loss start fresh.
    init_from: str | None = None
    val_batch_size: int = 32


def adam(params, lr: float, betas: tuple[float, float], fused: bool) -> torch.optim.Adam:
    """Adam, with the fused kernel where asked and this torch build has one for the device."""
    params = list(params)
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        except (RuntimeError, TypeError):
            log.info("no fused Adam for this device: using the default implementation")
    return torch.optim.Adam(params, lr=lr, betas=betas)


def load_train_config(run_dir: str | Path) -> TrainConfig:
    """The ``TrainConfig`` saved in a run folder."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a training run folder")
    return from_dict(TrainConfig, json.loads(path.read_text()))

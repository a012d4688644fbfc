"""Fine-tune a recognition network on real (+ hallucinated) faces: ``finetune(cfg, run_dir) -> checkpoint folder``.

The paper (Sec. 5) fine-tunes a ResNet-50 with a 256-D ``feat_extract`` layer and a softmax loss in Caffe with
"base learning rate 0.001, polynomial decay, gamma 0.96". Caffe's ``poly`` policy has a *power*, not a gamma, so we
read gamma as that power: ``lr(step) = lr * (1 - step / total_steps) ** 0.96``, over ``epochs * steps_per_epoch``
steps, with SGD momentum 0.9 (``optim.schedule: poly``). The other reading, 0.96 per epoch, is ``schedule: exp``.

Run folder: ``finetune_config.json``, ``identities.json``, ``val_image_ids.txt``, ``metrics.jsonl``,
``loss_curves.png``, ``checkpoint/`` (best validation loss), ``last/`` and ``resume/state.pt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from augmentor.config import from_dict, to_dict
from augmentor.errors import InputError
from augmentor.locking import output_lock
from augmentor.precision import autocast
from augmentor.training import run_state
from augmentor.training.run_state import RunCounters, epoch_seed
from recognition.backbone import NetConfig, RecognitionNet, load_init, load_model, save_model
from recognition.data import FaceData, FaceDataset, RecognitionDataConfig
from recognition.sampling import CopySampler, copy_sampler

log = logging.getLogger(__name__)

CONFIG_NAME = "finetune_config.json"


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    name: Literal["sgd", "adamw"] = "sgd"  # sgd: the paper (Caffe); adamw: an alternative
    lr: float = 0.001  # base learning rate (paper: 0.001)
    momentum: float = 0.9  # SGD momentum (Caffe's usual 0.9)
    weight_decay: float = 5e-4  # L2 (SGD) or decoupled (AdamW) weight decay
    schedule: Literal["poly", "exp", "constant"] = "poly"  # poly: Caffe "poly"; exp: gamma per epoch
    gamma: float = 0.96  # poly: the power of (1 - step / total_steps); exp: lr factor per epoch (paper: 0.96)
    grad_clip: float = 5.0  # clip the global gradient norm to this (0: off); ArcFace's s=64 makes large gradients
    trunk_lr_scale: float = 1.0  # the pretrained trunk's lr = lr x this (< 1 keeps face-pretrained features intact);
    # with model.embedding: pretrained, the embedding layer learns at this rate too
    frozen_trunk_epochs: int = 0  # trunk lr 0 for the first N epochs: the new layers learn first (linear probe, then
    # fine-tune), so their random start does not send large gradients into the pretrained trunk


@dataclass
class FinetuneConfig:
    """One fine-tuning run."""

    manifests: tuple[str, ...] = ()  # preprocess outputs (real) and pipeline manifests (hallucinated)
    init: str = "none"  # none | pretrained (dlib-resnet) | PATH of a local weights file for the trunk
    model: NetConfig = field(default_factory=NetConfig)
    data: RecognitionDataConfig = field(default_factory=RecognitionDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 30  # maximum epochs; training also stops on a validation-loss plateau
    batch_size: int = 64  # per worker; the global batch is batch_size * num_workers
    patience: int = 3  # stop after this many epochs without a validation-loss gain (0: never)
    min_delta: float = 1e-3  # the gain that counts as one
    max_steps_per_epoch: int | None = None  # cap steps per epoch (smoke runs)
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    device: str = "auto"  # auto, cpu, cuda, cuda:1 (single process; Ray workers get theirs from Ray)
    seed: int = 0  # split, init and data order


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Softmax cross-entropy (the margin, if any, is already in ``logits``); logs hold loss and top-1 accuracy."""
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(1) == labels).float().mean()
    return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}


def lr_factor(schedule: str, gamma: float, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The multiplier of the base learning rate at ``step`` (see the module docstring)."""
    if schedule == "poly":
        return max(0.0, 1.0 - step / max(total_steps, 1)) ** gamma
    if schedule == "exp":
        return gamma ** (step // max(steps_per_epoch, 1))
    return 1.0


def pretrained_parameters(net: RecognitionNet) -> list[torch.nn.Parameter]:
    """The weights that ``optim.trunk_lr_scale`` and ``frozen_trunk_epochs`` apply to: the trunk, and the embedding
    layer too when it is the pretrained one (``model.embedding: pretrained``)."""
    params = list(net.trunk.parameters())
    if net.config.embedding == "pretrained":
        params += list(net.feat_extract.parameters())
    return params


def _all_reduce(values: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)
    return values


class Finetuner:
    """One fine-tuning run, single-process or one worker of a data-parallel group. Call :meth:`fit`.

    Args:
        cfg: The run's settings.
        run_dir: Output folder; only rank 0 writes to it.
        data: Pre-loaded faces (default: read ``cfg.manifests``).
        rank, world_size: This worker's place in the group (1 = single process).
        device: Where to train (default: ``cfg.device``).
        wrap: Turns the network into the module trained (e.g. Ray's ``prepare_model``: device + DDP).
        report: Called with each epoch's metrics on every rank (e.g. ``ray.train.report``).
        progress: Show a progress bar (rank 0 only).
        resume: Continue the run in ``run_dir`` (its ``last/`` weights and ``resume/state.pt``) instead of
            initialising from ``cfg.init``.
    """

    def __init__(
        self,
        cfg: FinetuneConfig,
        run_dir: str | Path,
        data: FaceData | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        report: Callable[[dict], None] | None = None,
        progress: bool = True,
        resume: bool = False,
    ):
        from augmentor.precision import pick_device

        self.cfg, self.run_dir, self.rank, self.world_size = cfg, Path(run_dir), rank, world_size
        self.device = device or pick_device(cfg.device)
        self.report, self.progress = report, progress and rank == 0
        torch.manual_seed(cfg.seed)
        self.data = data or FaceData.load(cfg.manifests, cfg.data.val_fraction, cfg.seed)
        self.data_summary = self.data.summary()
        train_rows = self.data.train_rows()
        self.train_set = FaceDataset(train_rows, cfg.data.image_size, mirror=cfg.data.mirror)
        self.copy_sampler: CopySampler | None = None  # --copy-probability: epochs are passes over the real crops
        if cfg.data.copy_probability is not None:
            self.copy_sampler = copy_sampler(train_rows, cfg.data.copy_probability, cfg.seed, rank, world_size)
        val_rows = self.data.val_rows()
        self.val_set = FaceDataset(val_rows.iloc[rank::world_size], cfg.data.image_size) if len(val_rows) else None
        num_train = len(self.copy_sampler) * world_size if self.copy_sampler else len(self.train_set)
        self.steps_per_epoch = num_train // (cfg.batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise InputError(f"{num_train} training faces are fewer than one batch ({cfg.batch_size} x {world_size})")
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        model_cfg = dataclasses.replace(cfg.model, image_size=cfg.data.image_size, num_classes=self.data.num_classes)
        self.net = RecognitionNet(model_cfg)
        self.init_note = "resumed" if resume else load_init(self.net, cfg.init)
        opt = cfg.optim
        if opt.trunk_lr_scale == 0:  # frozen for the whole run: no gradients through it at all (much cheaper);
            for param in pretrained_parameters(self.net):  # before the wrap, so DDP never waits for their gradients
                param.requires_grad_(False)
        self.net.to(self.device)
        self.model = wrap(self.net) if wrap else self.net
        trunk = [p for p in pretrained_parameters(self.net) if p.requires_grad]
        trunk_ids = {id(p) for p in trunk}
        rest = [p for p in self.net.parameters() if p.requires_grad and id(p) not in trunk_ids]
        params = [{"params": rest}, {"params": trunk, "lr": opt.lr * opt.trunk_lr_scale}]
        if opt.name == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
        total, frozen = cfg.epochs * self.steps_per_epoch, opt.frozen_trunk_epochs * self.steps_per_epoch

        def factor(step: int) -> float:
            return lr_factor(opt.schedule, opt.gamma, step, total, self.steps_per_epoch)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # one factor per param group: rest, trunk
            self.optimizer, [factor, lambda step: 0.0 if step < frozen else factor(step)]
        )
        self.precision = "bf16" if self.device.type == "cuda" and cfg.bf16 else "fp32"
        self.counters = RunCounters()
        if resume:
            self.load_resume()

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        """A fresh bf16 autocast on CUDA with ``cfg.bf16``, else nothing (as :attr:`Trainer.autocast`)."""
        return autocast(self.precision, self.device)

    # --- data ---------------------------------------------------------------------------------------------------
    def _loader(self, dataset: FaceDataset, epoch: int | None) -> torch.utils.data.DataLoader:
        """Training order is a function of (seed, epoch), so a resumed run replays the same batches."""
        sampler: torch.utils.data.Sampler | None = None
        if epoch is not None and self.copy_sampler is not None:
            sampler = self.copy_sampler
            sampler.set_epoch(epoch)
        elif epoch is not None and self.world_size > 1:
            sampler = torch.utils.data.DistributedSampler(
                dataset, self.world_size, self.rank, shuffle=True, seed=self.cfg.seed, drop_last=True
            )
            sampler.set_epoch(epoch)
        elif epoch is not None:
            generator = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
            sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
        workers = self.cfg.data.loader_workers
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            drop_last=epoch is not None,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    # --- steps ----------------------------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)  # [B, 3, S, S] uint8
        labels = labels.to(self.device, non_blocking=True)
        with self.autocast:
            _, logits = self.model(images, labels)
        loss, logs = classification_loss(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.counters.step += 1
        return logs

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and top-1 accuracy on the validation images (real crops), summed over all workers."""
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss * n, correct, n
        if self.val_set is not None and len(self.val_set):
            self.net.eval()
            for images, labels in self._loader(self.val_set, None):
                images, labels = images.to(self.device), labels.to(self.device)
                with self.autocast:
                    _, logits = self.net(images, labels)
                loss, logs = classification_loss(logits, labels)
                n = len(labels)
                sums += torch.tensor([float(loss) * n, float(logs["accuracy"]) * n, n], device=self.device)
            self.net.train()
        sums = _all_reduce(sums)
        if sums[2] == 0:
            return {}
        return {"loss": float(sums[0] / sums[2]), "accuracy": float(sums[1] / sums[2])}

    # --- checkpoints ----------------------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {
            "data": self.data_summary,
            "manifests": list(self.cfg.manifests),
            "init": self.cfg.init,
            "training": to_dict(self.cfg),
            "world_size": self.world_size,
            **self.counters.meta(),
        }

    def save_resume(self) -> None:
        """Replace ``last/`` (the network) and ``resume/state.pt`` (optimiser, schedule, counters) together."""
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        run_state.save_resume(
            self.run_dir, self.counters, lambda folder: save_model(self.net, folder, self.meta()), state
        )

    def load_resume(self) -> None:
        """Continue from ``last/`` and ``resume/state.pt`` (after the last finished epoch, checked to agree)."""
        self.counters, state = run_state.load_resume(self.run_dir, self.device)
        net, config = load_model(self.run_dir / run_state.LAST_DIR, self.device)
        if config["data"]["fingerprint"] != self.data_summary["fingerprint"]:
            raise InputError(f"{self.run_dir}: the manifests changed since this run started; start a new run")
        self.net.load_state_dict(net.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        log.info("resumed %s at epoch %d (step %d)", self.run_dir, self.counters.epoch, self.counters.step)

    def write_run_files(self) -> None:
        """The split and label names, for audits (rank 0)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "identities.json").write_text(json.dumps(self.data.identities))
        val_ids = sorted(set(self.data.table.loc[self.data.is_val, "image_id"]))
        (self.run_dir / "val_image_ids.txt").write_text("".join(f"{i}\n" for i in val_ids))

    # --- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train until ``epochs`` or a validation plateau; return the best checkpoint folder."""
        if self.rank == 0:
            self.write_run_files()
            log.info("%s; %s", self.init_note, self.data_summary)
        self.net.train()
        while self.counters.epoch < self.cfg.epochs:
            record = self.end_epoch(*self.train_epoch())
            if self.report is not None:
                self.report(record)
            if self.counters.patience_spent(self.cfg.patience):
                log.info("validation loss plateaued for %d epochs: stopping", self.counters.bad_epochs)
                break
        return self.finish()

    def train_epoch(self) -> tuple[dict[str, float], float]:
        """One pass in the epoch's seeded order: the mean training loss and accuracy, and the seconds it took."""
        from tqdm import tqdm

        start, epoch = time.perf_counter(), self.counters.epoch
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch) * 8191 + self.rank)  # mirror flips: resumable
        sums = {"loss": 0.0, "accuracy": 0.0}
        desc = f"epoch {epoch + 1}/{self.cfg.epochs}"
        bar = tqdm(total=self.steps_per_epoch, desc=desc, unit="step", leave=False, disable=not self.progress)
        for i, (images, labels) in enumerate(self._loader(self.train_set, epoch)):
            if i >= self.steps_per_epoch:
                break
            logs = self.train_step(images, labels)
            for k in sums:
                sums[k] += float(logs[k])
            bar.update(1)
            bar.set_postfix(loss=f"{float(logs['loss']):.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        return {k: v / self.steps_per_epoch for k, v in sums.items()}, time.perf_counter() - start

    def end_epoch(self, train: dict[str, float], seconds: float) -> dict:
        """Validate, count the epoch and (rank 0) save what it earned; its ``metrics.jsonl`` record."""
        cfg = self.cfg
        val = self.validate()
        val_loss = val.get("loss", train["loss"])
        improved = self.counters.end_epoch(val_loss, cfg.min_delta)
        record = {
            "epoch": self.counters.epoch,
            "step": self.counters.step,
            "lr": self.scheduler.get_last_lr()[0],
            "train": train,
            "val": val,
            "val_loss": val_loss,
            "seconds": round(seconds, 3),
            "images_per_second": round(self.steps_per_epoch * cfg.batch_size * self.world_size / seconds, 2),
        }
        if self.rank == 0:
            if improved:
                save_model(self.net, self.run_dir / "checkpoint", self.meta())
            run_state.append_metrics(self.run_dir, record)
            self.save_resume()
            log.info(
                "epoch %d: train loss %.4f acc %.3f, val loss %.4f acc %.3f, %.1f img/s",
                self.counters.epoch,
                train["loss"],
                train["accuracy"],
                val_loss,
                val.get("accuracy", float("nan")),
                record["images_per_second"],
            )
        return record

    def finish(self) -> Path:
        """The best checkpoint (the last network if no epoch improved) and the loss curves (rank 0)."""
        if self.rank == 0:
            from augmentor.visualize import plot_loss_curves

            if not (self.run_dir / "checkpoint").exists():
                save_model(self.net, self.run_dir / "checkpoint", self.meta())
            plot_loss_curves(self.run_dir / run_state.METRICS_FILE, self.run_dir / run_state.LOSS_CURVES_FILE)
        return self.run_dir / "checkpoint"


def write_run_config(cfg: FinetuneConfig, run_dir: str | Path, extra: dict | None = None) -> Path:
    """Write ``finetune_config.json`` (the config plus launch options) before training starts."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_NAME
    path.write_text(json.dumps({**to_dict(cfg), **({"launch": extra} if extra else {})}, indent=2))
    return path


def load_finetune_config(run_dir: str | Path) -> tuple[FinetuneConfig, dict]:
    """The config and launch options a run folder was started with (for ``--resume``)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a finetune run folder")
    data = json.loads(path.read_text())
    launch = data.pop("launch", {})
    return from_dict(FinetuneConfig, data, str(path)), launch


def finetune(
    cfg: FinetuneConfig, run_dir: str | Path, resume: bool = False, progress: bool = True, data: FaceData | None = None
) -> Path:
    """Fine-tune in this process; return the best checkpoint folder.

    Args:
        cfg: Settings; ``cfg.manifests`` must name at least one manifest unless ``data`` is given.
        run_dir: The run folder (``finetune_config.json`` is written here unless resuming).
        resume: Continue the run in ``run_dir`` from its last finished epoch.
        progress: Show a progress bar.
        data: Pre-loaded faces (tests).

    Raises:
        augmentor.locking.FolderInUseError: another process is writing to ``run_dir``.
    """
    run_dir = Path(run_dir)
    with output_lock(run_dir, "augmentor finetune"):
        if not resume:
            write_run_config(cfg, run_dir)
        return Finetuner(cfg, run_dir, data=data, progress=progress, resume=resume).fit()


def resolve_manifests(cfg: FinetuneConfig) -> FinetuneConfig:
    """The config with absolute manifest paths (workers may run in other folders)."""
    return dataclasses.replace(cfg, manifests=tuple(str(Path(m).resolve()) for m in cfg.manifests))

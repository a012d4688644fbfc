"""Data-parallel fine-tuning on several GPUs or nodes through Ray Train's ``TorchTrainer``.

Every Ray import lives in this module, inside functions. Each worker reads the manifests itself (so their paths must
be visible on every node: shared storage for a multi-node run), builds the same split from the seed, wraps the
network in DDP with ``ray.train.torch.prepare_model`` and trains on its ``DistributedSampler`` share. Rank 0 writes
the run folder (which must also be on shared storage across nodes); every rank reads it on ``--resume``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from augmentor.config import from_dict, to_dict
from augmentor.locking import output_lock
from augmentor.training import run_state
from recognition.finetune import FinetuneConfig, resolve_manifests, write_run_config

log = logging.getLogger(__name__)


def _train_loop(config: dict) -> None:
    """The body of each Ray Train worker."""
    import ray.train
    import ray.train.torch

    from recognition.finetune import Finetuner

    context = ray.train.get_context()
    rank = context.get_world_rank()
    cfg = from_dict(FinetuneConfig, config["config"])
    tuner = Finetuner(
        cfg,
        config["run_dir"],
        rank=rank,
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        wrap=ray.train.torch.prepare_model,
        report=lambda metrics: ray.train.report(_flat(metrics)),
        progress=config["progress"],
        resume=config["resume"],
    )
    tuner.fit()


def _flat(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested epoch metrics as ``{"train/loss": ...}`` scalars for Ray's result table."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def finetune_distributed(
    cfg: FinetuneConfig,
    run_dir: str | Path,
    num_workers: int,
    use_gpu: bool = False,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Fine-tune with ``num_workers`` Ray Train workers (one GPU each with ``use_gpu``); return the checkpoint folder.

    Args:
        cfg: Settings; ``batch_size`` is per worker.
        run_dir: The run folder (shared storage for several nodes).
        num_workers: Data-parallel workers.
        use_gpu: One GPU per worker (NCCL); otherwise CPU workers (gloo).
        address: A running Ray cluster (``auto``, ``ray://host:10001``); None starts a local one unless Ray is
            already initialised in this process.
        resume: Continue the run in ``run_dir``.
        progress: Show rank 0's progress bar.
    """
    run_dir = Path(run_dir).resolve()
    with output_lock(run_dir, "augmentor finetune"):  # the driver holds it for all the workers
        return _fit(cfg, run_dir, num_workers, use_gpu, address, resume, progress)


def _fit(
    cfg: FinetuneConfig,
    run_dir: Path,
    num_workers: int,
    use_gpu: bool,
    address: str | None,
    resume: bool,
    progress: bool,
) -> Path:
    """:func:`finetune_distributed`, holding the run folder's lock."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = resolve_manifests(cfg)
    if resume:
        run_state.settle(run_dir)  # here, once, before the workers read it
    else:
        write_run_config(cfg, run_dir, {"num_workers": num_workers, "use_gpu": use_gpu, "address": address})
    if not ray.is_initialized():
        ray.init(address=address)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"config": to_dict(cfg), "run_dir": str(run_dir), "resume": resume, "progress": progress},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=run_dir.name, storage_path=str(run_dir / "ray")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"Ray Train failed: {result.error}") from result.error
    log.info("Ray Train finished: %s", result.metrics)
    return run_dir / "checkpoint"

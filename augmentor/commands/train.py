"""``augmentor train``: train the cascaded GAN (or its progressive variant) on preprocessed faces."""

from __future__ import annotations

import json

import click

from augmentor.cli_errors import user_errors
from augmentor.options import (
    choice_option,
    config_options,
    device_option,
    dry_run_option,
    folder_option,
    int_option,
    next_run_dir,
    out_root_option,
    resume_option,
)


@click.command("train", context_settings={"show_default": True})
@folder_option(
    "--data", "data_path", help="Output folder of `augmentor preprocess` (overrides data.path of the config)."
)
@config_options(
    "Training config, e.g. configs/train/cascade.yaml. Default: built-in.",
    "Override a config value, e.g. --set loss.identity=0 --set epochs=5. Repeatable.",
)
@choice_option(
    "--regime",
    choices=["cascade", "progressive"],
    help="cascade: all blocks every step (the paper); progressive: ProGAN-style growth. Default: config.",
)
@int_option("--epochs", minimum=1, help="Maximum epochs. Default: config.")
@device_option(None, "auto, cpu, cuda, cuda:1 ... Default: config (auto).")
@out_root_option
@resume_option
@dry_run_option("Print the resolved config, then stop.")
def train(data_path, config_path, overrides, regime, epochs, device, out_root, resume_dir, dry_run) -> None:
    """Train the cascaded GAN (or its progressive variant) on preprocessed faces.

    Writes a numbered run folder with train_config.json, metrics.jsonl, a sample grid per epoch,
    loss_curves.png, checkpoint/ (best validation epoch), last/ and resume/.

    \b
    Examples:
      augmentor train --data runs/celeba --config configs/train/cascade.yaml
      augmentor train --data runs/celeba --config configs/train/progressive.yaml
      augmentor train --data runs/celeba --config configs/train/tiny.yaml --device cpu
      augmentor train --resume runs/00003-cascade-cascade
    """
    from augmentor.config import load_config, to_dict
    from augmentor.training.loop import TrainConfig, load_train_config
    from augmentor.training.loop import train as run_training

    if resume_dir is not None:
        if config_path or overrides or data_path or regime or epochs or device:
            raise click.BadParameter(
                "--resume takes the run's saved config; give no other settings", param_hint="--resume"
            )
        cfg, run_dir = load_train_config(resume_dir), resume_dir
    else:
        given = {
            "data.path": str(data_path) if data_path else None,
            "regime": regime,
            "epochs": epochs,
            "device": device,
        }
        with user_errors():  # typed option values go in as they are: --data 2024 stays the folder name, not the number
            cfg = load_config(TrainConfig, config_path, list(overrides), {k: v for k, v in given.items() if v})
        if not cfg.data.path:
            raise click.BadParameter(
                "no training data: pass --data DIR (an `augmentor preprocess` output)", param_hint="--data"
            )
        desc = f"{cfg.regime}-{config_path.stem if config_path else 'default'}"
        run_dir = next_run_dir(out_root, desc)
    if dry_run:
        click.echo(json.dumps({"run_dir": str(run_dir), **to_dict(cfg)}, indent=2))
        return
    click.echo(f"run folder: {run_dir}")
    with user_errors():
        checkpoint = run_training(cfg, run_dir, resume=resume_dir is not None)
    click.echo(f"best generator: {checkpoint}")
    click.echo(f"loss curves: {run_dir / 'loss_curves.png'}; samples: {run_dir / 'samples'}")

"""Generator checkpoints: ``model.safetensors`` + ``config.json``; the model is rebuilt from the config alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import augmentor
from augmentor.config import from_dict, to_dict
from augmentor.models import Cascade, CascadeConfig

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "augmentor-cascade"
FORMAT_VERSION = 1


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{augmentor.__version__}+{commit}" if commit else augmentor.__version__


def write_checkpoint(
    state: dict[str, torch.Tensor],
    architecture: dict[str, Any],
    directory: str | Path,
    fmt: str,
    version: int,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` to ``directory``, each atomically (temp file + rename).

    Args:
        state: Tensors to store.
        architecture: What rebuilds the module (its config as plain data).
        directory: Output folder (created).
        fmt: Format name recorded in both files, checked by :func:`read_checkpoint_config`.
        version: Format version.
        meta: Extra JSON-able fields for ``config.json``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config = {
        "format": fmt,
        "format_version": version,
        "architecture": architecture,
        "code_version": code_version(),
        **(meta or {}),
    }
    tmp = directory / f".{MODEL_FILE}.tmp"
    save_file(state, str(tmp), metadata={"format": fmt})
    tmp.replace(directory / MODEL_FILE)
    tmp = directory / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(directory / CONFIG_FILE)
    return directory


def read_checkpoint_config(directory: str | Path, fmt: str, version: int) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder, checked for its format and version.

    Raises:
        FileNotFoundError: no ``config.json``.
        ValueError: another format, or a newer version than this code reads.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an {fmt} checkpoint folder")
    config = json.loads(path.read_text())
    if config.get("format") != fmt:
        raise ValueError(f"{path} is not an {fmt} checkpoint (format={config.get('format')!r})")
    if config.get("format_version", 0) > version:
        raise ValueError(f"{path} needs a newer augmentor (format_version {config['format_version']})")
    return config


def save_generator(
    model: Cascade, directory: str | Path, meta: dict[str, Any] | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write the cascade's ``model.safetensors`` and ``config.json`` to ``directory`` (each atomically).

    Args:
        model: The cascade.
        directory: Output folder (created).
        meta: Extra JSON-able fields for ``config.json`` (losses, data fingerprint, training summary).
        dtype: Store floating weights in this dtype (e.g. ``torch.bfloat16`` to ship); loading casts back.
    """
    state = {k: v.to(dtype) if dtype and v.is_floating_point() else v for k, v in model.state_dict().items()}
    return write_checkpoint(state, to_dict(model.config), directory, FORMAT, FORMAT_VERSION, meta)


def read_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a cascade checkpoint folder, checked for its format."""
    return read_checkpoint_config(directory, FORMAT, FORMAT_VERSION)


def load_weights(module: torch.nn.Module, directory: str | Path) -> torch.nn.Module:
    """Load ``directory/model.safetensors`` into ``module`` (floating tensors as float32), requiring an exact match.

    Raises:
        FileNotFoundError: the weights file is missing.
        ValueError: the file's tensors do not match the module built from ``config.json``.
    """
    weights = Path(directory) / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not match its config.json: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return module


def load_generator(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Cascade, dict[str, Any]]:
    """Rebuild the cascade from ``config.json`` and load its weights (as float32).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the files do not match each other.
    """
    config = read_config(directory)
    model = load_weights(Cascade(from_dict(CascadeConfig, config["architecture"], "architecture")), directory)
    return model.to(device).eval(), config

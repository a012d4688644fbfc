"""Generator checkpoints: ``model.safetensors`` + ``config.json``; the model is rebuilt from the config alone."""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import augmentor
from augmentor.atomic import recover_folder, replace_folder
from augmentor.config import from_dict, to_dict
from augmentor.errors import InputError
from augmentor.layout import CONFIG_FILE, INDEX_FILE, MODEL_FILE, SHARD_GLOB
from augmentor.models import Cascade, CascadeConfig

FORMAT = "augmentor-cascade"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


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
    max_shard_bytes: int | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` as a new folder, then rename it into place of ``directory``.

    A kill at any moment leaves the old checkpoint or the new one (see :mod:`augmentor.atomic`), never a folder
    without weights. Other files already in ``directory`` are carried over.

    With ``max_shard_bytes``, weights larger than that are split into ``model-00001-of-0000N.safetensors`` ...
    plus ``model.safetensors.index.json`` (the Hugging Face layout), e.g. to keep every file under a size limit.

    Args:
        state: Tensors to store.
        architecture: What rebuilds the module (its config as plain data).
        directory: Output folder (created or replaced).
        fmt: Format name recorded in both files, checked by :func:`read_checkpoint_config`.
        version: Format version.
        meta: Extra JSON-able fields for ``config.json``.
        max_shard_bytes: Largest tensor bytes per file (None: one file). A tensor larger than this gets a file
            of its own.
    """
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config = {
        "format": fmt,
        "format_version": version,
        "architecture": architecture,
        "code_version": code_version(),
        **(meta or {}),
    }

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        _write_weights(state, folder, fmt, max_shard_bytes)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        _carry_other_files(directory, folder)

    return replace_folder(directory, write)


def _is_checkpoint_file(name: str) -> bool:
    return name in (MODEL_FILE, INDEX_FILE, CONFIG_FILE) or fnmatch.fnmatch(name, SHARD_GLOB)


def _carry_other_files(old: Path, new: Path) -> None:
    """Copy what else the folder being replaced holds (a README, say) into its replacement."""
    if not old.is_dir():
        return
    for path in old.iterdir():
        if _is_checkpoint_file(path.name) or path.name.startswith("."):
            continue
        if path.is_dir():
            shutil.copytree(path, new / path.name)
        else:
            shutil.copy2(path, new / path.name)


def _write_weights(state: dict[str, torch.Tensor], folder: Path, fmt: str, max_shard_bytes: int | None) -> None:
    """``model.safetensors``, or the shards and their index."""
    shards = _split(state, max_shard_bytes)
    if len(shards) == 1:
        save_file(state, str(folder / MODEL_FILE), metadata={"format": fmt})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": fmt})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total, "format": fmt}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2))


def _split(state: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    """Group tensors, in order, into shards of at most ``max_bytes`` (one shard if None)."""
    if max_bytes is None:
        return [state]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def read_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, from ``model.safetensors`` or from the shards its index names.

    Raises:
        FileNotFoundError: neither file, or a shard the index names, exists.
        InputError: a shard lacks a tensor the index promises.
    """
    directory = Path(directory)
    single, index = directory / MODEL_FILE, directory / INDEX_FILE
    if single.is_file():
        return load_file(str(single))
    if not index.is_file():
        raise FileNotFoundError(f"{single} not found (nor a sharded {index})")
    weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    state: dict[str, torch.Tensor] = {}
    for name in sorted(set(weight_map.values())):
        shard = directory / name
        if not shard.is_file():
            raise FileNotFoundError(f"{shard} not found: {index} names it")
        state.update(load_file(str(shard)))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise InputError(f"{directory}: the shards lack {missing[:3]} named in {INDEX_FILE}")
    return state


def read_checkpoint_config(directory: str | Path, fmt: str, version: int) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder, checked for its format and version.

    Raises:
        FileNotFoundError: no ``config.json``.
        InputError: another format, or a newer version than this code reads.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file() and recover_folder(directory):  # a save was killed while renaming it into place
        log.info("finished the interrupted save of %s", directory)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an {fmt} checkpoint folder")
    config = json.loads(path.read_text())
    if config.get("format") != fmt:
        raise InputError(f"{path} is not an {fmt} checkpoint (format={config.get('format')!r})")
    if config.get("format_version", 0) > version:
        raise InputError(f"{path} needs a newer augmentor (format_version {config['format_version']})")
    return config


def save_generator(
    model: Cascade,
    directory: str | Path,
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write the cascade's ``model.safetensors`` and ``config.json`` to ``directory`` (each atomically).

    Args:
        model: The cascade.
        directory: Output folder (created).
        meta: Extra JSON-able fields for ``config.json`` (losses, data fingerprint, training summary).
        dtype: Store floating weights in this dtype (e.g. ``torch.bfloat16`` to ship); loading casts back.
        max_shard_bytes: Split the weights into files of at most this many bytes (see :func:`write_checkpoint`).
    """
    state = {k: v.to(dtype) if dtype and v.is_floating_point() else v for k, v in model.state_dict().items()}
    return write_checkpoint(state, to_dict(model.config), directory, FORMAT, FORMAT_VERSION, meta, max_shard_bytes)


def read_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a cascade checkpoint folder, checked for its format."""
    return read_checkpoint_config(directory, FORMAT, FORMAT_VERSION)


def load_weights(module: torch.nn.Module, directory: str | Path, grow_inputs: bool = False) -> torch.nn.Module:
    """Load a checkpoint folder's weights (one file or shards) into ``module`` as float32, requiring an exact match.

    Args:
        grow_inputs: Also accept a convolution whose stored weight has fewer input channels than the module's
            (a generator that gained noise channels, which come last in every block's input): the extra input
            channels get zero weights, so the grown model starts out computing exactly what the stored one did.

    Raises:
        FileNotFoundError: the weights file is missing.
        InputError: the file's tensors do not match the module built from ``config.json``.
    """
    weights = Path(directory) / MODEL_FILE
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_state(directory).items()}
    if grow_inputs:
        own = module.state_dict()
        for key, value in state.items():
            target = own.get(key)
            if target is not None and value.ndim == 4 and target.shape[0] == value.shape[0]:
                extra = target.shape[1] - value.shape[1]
                if extra > 0 and target.shape[2:] == value.shape[2:]:
                    zeros = value.new_zeros(value.shape[0], extra, *value.shape[2:])
                    state[key] = torch.cat([value, zeros], dim=1)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{weights} does not match its config.json: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return module


def load_generator(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Cascade, dict[str, Any]]:
    """Rebuild the cascade from ``config.json`` and load its weights (as float32).

    Raises:
        FileNotFoundError: a file is missing.
        InputError: the files do not match each other.
    """
    return load_checkpoint(directory, FORMAT, FORMAT_VERSION, CascadeConfig, Cascade, device)


def load_checkpoint(
    directory: str | Path,
    fmt: str,
    version: int,
    architecture: type,
    build: Callable[[Any], torch.nn.Module],
    device: str | torch.device = "cpu",
) -> tuple[Any, dict[str, Any]]:
    """Rebuild a module from ``config.json`` (``build(architecture(**config["architecture"]))``), load its weights as
    float32, and return it in eval mode on ``device`` with the config.

    Raises:
        FileNotFoundError: a file is missing.
        InputError: another format, or files that do not match each other.
    """
    config = read_checkpoint_config(directory, fmt, version)
    module = load_weights(build(from_dict(architecture, config["architecture"], "architecture")), directory)
    return module.to(device).eval(), config

"""Plain helpers shared by several test modules (fixtures live in conftest.py); import as ``from helpers import``."""

from __future__ import annotations

import json
from pathlib import Path


def process_parents() -> dict[int, int]:
    """``{pid: parent pid}`` of every process, from one pass over /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    return parents


def finetune_config(manifests, settings: dict, config: Path | None = None):
    """A CPU ResNet-18 :class:`FinetuneConfig` on ``manifests``, with ``settings`` (dotted keys) over ``config``."""
    from augmentor.config import load_config
    from recognition.finetune import FinetuneConfig

    base = {"model.backbone": "resnet18", "data.loader_workers": 0, "device": "cpu"}
    overrides = [f"manifests={json.dumps([str(m) for m in manifests])}"]
    overrides += [f"{key}={value}" for key, value in {**base, **settings}.items()]
    return load_config(FinetuneConfig, config, overrides)

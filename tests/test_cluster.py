"""augmentor run on a real multi-node Ray cluster on this machine: a worker node is lost mid-run, the job completes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from augmentor.models import Cascade, CascadeConfig
from augmentor.training.checkpoints import save_generator
from pipelines.manifest import MANIFEST_FILE, part_paths, read_manifest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds each node's workers through /proc"),
]

TINY = {r: 4 for r in (4, 8, 16, 32, 64, 128)}
NUM_IMAGES = 48
PREDICTOR_TITLE = "ray::MapWorker(MapBatches(Predict"  # Predictor or PredictAndWrite actors


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    return parents


def _workers_under(raylet: int, title: str) -> list[int]:
    """Processes descending from a node's raylet whose command line starts with ``title``."""
    parents, found = _parents(), []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, raylet):
            ancestor = parents.get(ancestor)
        try:
            if ancestor == raylet and (Path("/proc") / str(pid) / "cmdline").read_text().startswith(title):
                found.append(pid)
        except OSError:
            continue
    return found


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


@pytest.fixture
def cluster():
    """A head node that runs no work (as on KubeRay) and two CPU-only worker nodes."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def test_losing_a_worker_node_mid_run(cluster, lfw_images, tmp_path):
    cluster, workers = cluster
    torch.manual_seed(0)
    save_generator(Cascade(CascadeConfig(widths=TINY)), tmp_path / "ckpt")
    root = tmp_path / "lfw"
    for i in range(NUM_IMAGES):
        person = root / f"Person_{i // 4:02d}"
        person.mkdir(parents=True, exist_ok=True)
        os.link(lfw_images[i % len(lfw_images)], person / f"img_{i:03d}.jpg")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "augmentor.cli", "run", "--no-progress", "--address", cluster.address,
               "--dataset", "lfw", "--root", str(root), "--model", str(tmp_path / "ckpt"), "--out", str(out),
               "--workers", "2", "--batch-size", "2", "--precision", "fp32"]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        if part_paths(out):  # mid-run: some batches written, more to come
            victim = next((n for n in workers if _workers_under(_raylet_pid(n), PREDICTOR_TITLE)), None)
        time.sleep(0.05)
    assert victim is not None and proc.poll() is None, "the node loss should land mid-run"
    written = read_manifest(out).num_rows
    print(f"removing a worker node after {time.monotonic() - start:.1f} s, {written} of {NUM_IMAGES} rows written")
    cluster.remove_node(victim, allow_graceful=False)
    output, _ = proc.communicate(timeout=400)
    print(f"job done {time.monotonic() - start:.1f} s after its start")
    assert proc.returncode == 0, output[-3000:]
    assert written < NUM_IMAGES
    frame = pd.read_parquet(out / MANIFEST_FILE)
    assert len(frame) == NUM_IMAGES and not frame.duplicated(["image_id", "copy"]).any()
    assert sorted(frame["image_id"]) == sorted(f"Person_{i // 4:02d}/img_{i:03d}" for i in range(NUM_IMAGES))
    assert all((out / p).is_file() for p in frame["output_path"].dropna())

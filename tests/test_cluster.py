"""Issue 18: augmentor run on a multi-node Ray cluster that loses a node, and a manifest row for every listed input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import process_parents

from augmentor.cli import main
from augmentor.manifest import (
    MANIFEST_FILE,
    MERGED_PREFIX,
    consolidate,
    merge_parts,
    part_paths,
    read_manifest,
    write_part,
)
from pipelines.plan import count_rows, plan_resources, plan_work
from pipelines.stages import noise_seed

NUM_IMAGES = 96
NUM_MISSING = 2  # listed files not on disk
# A masking actor and a hallucinating one (Predictor or PredictAndWrite): the node to lose hosts both.
TITLES = ("ray::MapWorker(MapBatches(MaskStage", "ray::MapWorker(MapBatches(Predict")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoints) -> Path:
    return tiny_checkpoints / "plain"


def _list_file(path: Path, images: list[Path], missing: int) -> Path:
    """A ``list`` listing: ``images`` (4 per identity), then ``missing`` listed files that are not on disk."""
    names = [f"img_{i:03d}.jpg" for i in range(len(images) + missing)]
    for name, image in zip(names, images, strict=False):
        os.link(image, path.parent / name)
    identities = [f"Person_{i // 4:02d}" for i in range(len(names))]
    pd.DataFrame({"path": names, "identity": identities}).to_csv(path, sep="\t", index=False)
    return path


def test_missing_files_become_manifest_rows(checkpoint, lfw_images, tmp_path):
    """Listed files not on disk get rows with status missing from the driver: no Ray, and none on a rerun."""
    listing = _list_file(tmp_path / "faces.tsv", [], missing=3)
    args = ["run", "--no-progress", "--dataset", "list", "--root", str(listing), "--model", str(checkpoint),
            "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "0 ok, 0 no face, 0 errors, 3 missing in the manifest" in result.output
    frame = pd.read_parquet(tmp_path / "out" / MANIFEST_FILE)
    assert frame["image_id"].tolist() == ["img_000", "img_001", "img_002"]
    assert (frame["status"] == "missing").all() and frame["output_path"].isna().all()
    assert frame["reason"].str.startswith("missing: ").all() and frame["match_score"].isna().all()
    assert frame["seed"].tolist() == [noise_seed(i, 0) for i in frame["image_id"]]
    os.link(lfw_images[0], tmp_path / "img_000.jpg")  # found later: the row stays missing (rows are final)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "3 already done, 0 made" in result.output, result.output


def _rows(ids: range, status: str = "no_face") -> dict[str, list]:
    n = len(ids)
    return {
        "image_id": [f"id{i:05d}" for i in ids], "identity": ["a"] * n, "label": [0] * n, "copy": [0] * n,
        "source_path": ["/x.jpg"] * n, "output_path": [None] * n, "status": [status] * n, "reason": ["x: y"] * n,
        "model_id": ["0" * 16] * n, "seed": [1] * n, "mask_area": [None] * n, "match_score": [None] * n,
    }  # fmt: skip


def test_merging_parts_during_a_run_keeps_every_row_once(tmp_path):
    """The driver's periodic merge: new parts only (linear cost), atomic, every key once whatever overlaps."""
    for start in range(0, 64, 16):
        write_part(_rows(range(start, start + 16)), tmp_path)
    first = merge_parts(tmp_path)
    assert first is not None and part_paths(tmp_path) == [first] and first.name.startswith(MERGED_PREFIX)
    assert merge_parts(tmp_path) is None  # nothing new: a merged part is not merged again
    write_part(_rows(range(60, 70)), tmp_path)  # a retried batch overlapping merged keys
    write_part(_rows(range(70, 80)), tmp_path)
    second = merge_parts(tmp_path)
    assert sorted(part_paths(tmp_path)) == sorted([first, second])
    assert read_manifest(tmp_path).num_rows == 80
    assert consolidate(tmp_path).num_rows == 80 and not part_paths(tmp_path)


def test_plan_keeps_masking_alive_on_node_loss_and_its_bookkeeping_is_vectorised():
    assert plan_resources(4, 0, 2, None, num_nodes=1).mask_actors == 1
    assert plan_resources(4, 0, 2, None, num_nodes=2).mask_actors == 2  # one node lost: masking goes on
    assert plan_resources(64, 0, None, None, num_nodes=4).mask_actors == 16  # already one per 4 workers
    assert plan_resources(16, 2, None, None, num_nodes=3).mask_actors == 13  # GPU mode: every CPU left
    n = 200_000
    table = pd.DataFrame({"image_id": [f"{i // 47}/{i}" for i in range(n)], "identity": [str(i // 47) for i in range(n)],
                          "path": ["p"] * n})  # fmt: skip
    ids = table["image_id"].tolist()
    done = pd.DataFrame(  # copy 0 of the first 150k, copy 2 of the first 100k, repeats, a copy beyond --copies
        {"image_id": ids[:150_000] + ids[:100_000] + ids[:10_000] + ids[:5], "copy": [0] * 150_000 + [2] * 100_000
         + [0] * 10_000 + [5] * 5}
    )  # fmt: skip
    listing = plan_work(table, copies=3, limit=None, done=done)
    assert listing["todo"].iloc[[0, 99_999, 100_000, 149_999, 150_000]].tolist() == [0b010] * 2 + [0b110] * 2 + [7]
    assert count_rows(listing) == 3 * n - 250_000


def _actors_by_node(raylets: list[int]) -> dict[int, set[str]]:
    """Which of :data:`TITLES` run under each node's raylet (one pass over /proc)."""
    parents, found = process_parents(), {raylet: set() for raylet in raylets}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1) and ancestor not in found:
            ancestor = parents.get(ancestor)
        if ancestor in found:
            try:
                command = (Path("/proc") / str(pid) / "cmdline").read_text()
            except OSError:
                continue
            found[ancestor].update(title for title in TITLES if command.startswith(title))
    return found


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


@pytest.fixture
def cluster(monkeypatch):
    """A head node that runs no work (as on KubeRay) and two CPU-only worker nodes."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    # Cluster records its address in /tmp/ray/ray_current_cluster, where any ray.init() on this machine (another
    # test session's) would find and join it, and deletes that file at the end, whoever wrote it: neither here.
    monkeypatch.setattr("ray._private.utils.write_ray_address", lambda *args, **kwargs: None)
    monkeypatch.setattr("ray._common.utils.reset_ray_address", lambda *args, **kwargs: None)
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


@pytest.mark.slow  # a multi-node Ray cluster, and a node killed mid-run
@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds each node's workers through /proc")
def test_losing_a_worker_node_mid_run(cluster, checkpoint, lfw_images, tmp_path):
    """Remove a worker node hosting actors of the job mid-run: the job completes, with every input once.

    The default plan (4 hallucinating actors of 0.75 CPU, 2 masking ones of 0.25) leaves room on the surviving
    node for the masking actors whatever Ray packed on the lost one; hallucinating actors lost with it restart
    when the others are released at the end of the queue.
    """
    cluster, workers = cluster
    images = [lfw_images[i % len(lfw_images)] for i in range(NUM_IMAGES)]
    listing = _list_file(tmp_path / "faces.tsv", images, missing=NUM_MISSING)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "augmentor.cli", "run", "--no-progress", "--address", cluster.address,
               "--dataset", "list", "--root", str(listing), "--model", str(checkpoint), "--out", str(out),
               "--batch-size", "2", "--precision", "fp32"]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, hosted = None, set()
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        if len(part_paths(out)) > 1:  # mid-run: a batch written besides the driver's part of missing files
            actors = _actors_by_node([_raylet_pid(node) for node in workers])
            # Best a node with both kinds of actor, then one with masking (the stage that stalled the job).
            ranked = sorted(workers, key=lambda n: (len(actors[_raylet_pid(n)]), TITLES[0] in actors[_raylet_pid(n)]))
            if actors[_raylet_pid(ranked[-1])]:
                victim, hosted = ranked[-1], actors[_raylet_pid(ranked[-1])]
        time.sleep(0.02)
    if victim is None or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"the node loss should land mid-run; the job said:\n{proc.communicate()[0][-3000:]}")
    written = read_manifest(out).num_rows
    names = sorted(title.split("(")[-1] for title in hosted)
    print(f"removing a worker node ({', '.join(names)}) after {time.monotonic() - start:.1f} s, {written} rows written")
    cluster.remove_node(victim, allow_graceful=False)
    output, _ = proc.communicate(timeout=300)
    print(f"job done {time.monotonic() - start:.1f} s after its start")
    assert proc.returncode == 0, output[-3000:]
    assert "plan: 2 masking actor(s), 4 cpu hallucinating actor(s)" in output
    assert f"{NUM_MISSING} missing in the manifest" in output
    assert written < NUM_IMAGES + NUM_MISSING
    frame = pd.read_parquet(out / MANIFEST_FILE)
    assert not frame.duplicated(["image_id", "copy"]).any()
    assert sorted(frame["image_id"]) == [f"img_{i:03d}" for i in range(NUM_IMAGES + NUM_MISSING)]
    assert frame["status"].value_counts()["missing"] == NUM_MISSING
    assert all((out / p).is_file() for p in frame["output_path"].dropna())

"""benchmarks/regime_recipe.py (issue 25: regime (a)'s recipe chosen on held-out CelebA identities) and the grid's
--data-only filter: the identity split, the training shards, the held-out pairs and the bootstrap."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their neighbours (record, recognition_grid)
    try:
        import regime_recipe
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return regime_recipe


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((128, 128, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def shards(tmp_path) -> Path:
    """One preprocess-like shard: 6 identities x 3 faces (one failed row)."""
    identities = [f"id{i}" for i in range(6) for _ in range(3)]
    status = ["ok"] * len(identities)
    status[0] = "no_face"
    table = pa.table(
        {
            "image_id": [f"img{n}" for n in range(len(identities))],
            "identity": identities,
            "status": status,
            "aligned": [_png(n) for n in range(len(identities))],
            "landmarks": [np.arange(136, dtype=np.float32).tolist()] * len(identities),
        }
    )
    folder = tmp_path / "real"
    folder.mkdir()
    pq.write_table(table, folder / "part-00000.parquet")
    return folder


def test_split_shards_and_pairs(recipe, shards, tmp_path):
    tables = recipe.read_manifests([shards])
    identities = recipe.identities_of(tables)
    assert identities == [f"id{i}" for i in range(6)]
    heldout = recipe.split_identities(identities, 0.34, seed=3)
    assert len(heldout) == 2 and heldout == recipe.split_identities(identities, 0.34, seed=3)
    (train,) = recipe.write_training_shards([shards], tables, heldout, tmp_path / "out")
    kept = pq.read_table(train / "part-00000.parquet")
    assert set(kept["identity"].to_pylist()) == set(identities) - heldout and kept.num_rows == 12
    assert kept.schema == pq.read_table(shards).schema  # every column, so finetune reads it as real crops

    faces = recipe.heldout_faces(tables, heldout, per_identity=2, ratio=3, seed=0)
    assert set(faces.identities) == heldout and len(faces.faces.images) == 6 - ("id0" in heldout)
    names = faces.identities
    matched = faces.same.sum()
    assert matched == sum(min(2, n * (n - 1) // 2) for n in np.unique(names, return_counts=True)[1])
    counts = np.unique(names, return_counts=True)[1]
    possible = (len(names) ** 2 - len(names) - (counts * (counts - 1)).sum()) // 2
    assert (~faces.same).sum() == min(3 * matched, possible)  # capped where too few exist
    more = recipe.heldout_faces(tables, recipe.split_identities(identities, 0.67, seed=3), 1, 2, seed=0)
    assert (~more.same).sum() == 2 * more.same.sum()
    assert np.all(names[faces.left[faces.same]] == names[faces.right[faces.same]])
    assert np.all(names[faces.left[~faces.same]] != names[faces.right[~faces.same]])
    assert faces.faces.landmarks[0].shape == (68, 2) and faces.faces.images.shape[1:] == (128, 128, 3)


def test_bootstrap_difference_brackets_the_observed_gap(recipe):
    rng = np.random.default_rng(0)
    identities = np.repeat(np.arange(40).astype(str), 2)
    same = np.r_[np.ones(200, bool), np.zeros(800, bool)]
    left = rng.integers(0, 80, len(same))
    aligned = recipe.AlignedImages([], np.zeros((80, 1, 1, 3), np.uint8), [])
    faces = recipe.HeldOut(aligned, identities, left, left, same)
    good = np.where(same, 1.0, 0.0) + rng.normal(0, 0.3, len(same))
    worse = np.where(same, 1.0, 0.0) + rng.normal(0, 0.6, len(same))
    ci = recipe.bootstrap_difference(good, worse, faces, rounds=200, seed=0)
    assert 0 < ci["auc"][0] < ci["auc"][1]  # the better scores win on every resample
    same_ci = recipe.bootstrap_difference(good, good, faces, rounds=50, seed=0)
    assert same_ci["auc"] == [0.0, 0.0] and same_ci["tpr_at_fpr_0.01"] == [0.0, 0.0]


def test_recipe_specs(recipe):
    import click

    parsed = recipe._recipes(("base=", "gentle=optim.trunk_lr_scale=0.001,model.embedding=pretrained"))
    assert parsed == {"base": [], "gentle": ["optim.trunk_lr_scale=0.001", "model.embedding=pretrained"]}
    with pytest.raises(click.BadParameter, match="NAME=KEY=VALUE"):
        recipe._recipes(("no-equals",))


def test_grid_data_only_keeps_the_data_steps(recipe):
    grid = sys.modules["recognition_grid"]
    names = ["preprocess celeba", "donor-refined copies of celeba-extra", "finetune scratch/real-s0", "verify-lfw"]
    steps = [grid.Step(name, [], 1.0) for name in names]
    assert [s.name for s in steps if grid.is_data_step(s)] == names[:2]

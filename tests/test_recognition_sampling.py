"""Issue 25: finetune --copy-probability (copies as an augmentation of the real crops) and the frozen-trunk recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from helpers import finetune_config

from augmentor.cli import main
from augmentor.preprocessing.shards import encode_png
from recognition.finetune import FinetuneConfig, Finetuner
from recognition.sampling import CopySampler, copy_groups, copy_sampler

K = 3  # copies per real crop
REAL_VALUE, COPY_VALUE = 0, 200  # the grey of every real crop and of every copy (so a batch shows its kind)


def _table(num_real: int = 40, num_copies: int = K, seed: int = 0) -> pd.DataFrame:
    """Real rows of ``num_real`` images (4 identities), then their copies in shuffled order; image 0 has none, and
    one copy belongs to no real crop."""
    ids = [f"p{i % 4}/img{i:03d}.jpg" for i in range(num_real)]
    real = pd.DataFrame({"image_id": ids, "identity": [f"p{i % 4}" for i in range(num_real)], "kind": "real"})
    copies = pd.DataFrame(
        [
            {"image_id": ids[i], "identity": f"p{i % 4}", "kind": "hallucinated", "copy": c}
            for i in range(1, num_real)
            for c in range(num_copies)
        ]
    )
    copies = copies.sample(frac=1.0, random_state=seed)
    orphan = pd.DataFrame([{"image_id": "ghost.jpg", "identity": "p9", "kind": "hallucinated", "copy": 0}])
    return pd.concat([real, copies, orphan], ignore_index=True)


def _epoch_rows(table: pd.DataFrame, p: float, seed: int = 0, epoch: int = 0, **kw) -> np.ndarray:
    sampler = copy_sampler(table, p, seed, **kw)
    sampler.set_epoch(epoch)
    return np.array(list(sampler))


def _real_only(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["kind"] == "real"].reset_index(drop=True)


def test_copy_groups_match_image_and_identity():
    table = _table()
    real, copies = copy_groups(table)
    np.testing.assert_array_equal(real, np.arange(40))
    assert len(copies[0]) == 0 and all(len(c) == K for c in copies[1:])
    for r, c in zip(real, copies, strict=True):
        assert (table.loc[c, "image_id"] == table.loc[r, "image_id"]).all()
        assert (table.loc[c, "kind"] == "hallucinated").all()
    assert "ghost.jpg" not in set(table.loc[np.concatenate(copies), "image_id"])
    # a copy of the same file name but another identity (another dataset) is not this image's copy
    other = pd.concat(
        [table, pd.DataFrame([{"image_id": table.loc[1, "image_id"], "identity": "q", "kind": "hallucinated"}])],
        ignore_index=True,
    )
    assert len(copy_groups(other)[1][1]) == K


def test_probability_zero_draws_exactly_the_real_crops():
    table = _table()
    rows = _epoch_rows(table, 0.0)
    assert sorted(rows.tolist()) == list(range(40))  # every real crop once, no copy
    # the real arm (no copy rows at all) draws the same real images in the same order: the arms are paired
    np.testing.assert_array_equal(rows, _epoch_rows(_real_only(table), 0.5))


def test_probability_one_draws_only_copies_of_the_right_image():
    table = _table()
    rows = _epoch_rows(table, 1.0)
    kinds = table.loc[rows, "kind"].to_numpy()
    assert len(rows) == 40
    assert (kinds == "hallucinated").sum() == 39 and table.loc[rows[kinds == "real"], "image_id"].tolist() == [
        "p0/img000.jpg"  # the one real crop without copies stays real
    ]
    real_order = _epoch_rows(table, 0.0)
    assert table.loc[rows, "image_id"].tolist() == table.loc[real_order, "image_id"].tolist()
    assert table.loc[rows, "identity"].tolist() == table.loc[real_order, "identity"].tolist()


def test_probability_half_and_uniform_copies_over_many_draws():
    table = _table(num_real=201)
    draws = np.concatenate([_epoch_rows(table, 0.5, epoch=e) for e in range(50)])  # 10,050 draws
    is_copy = (table.loc[draws, "kind"] == "hallucinated").to_numpy()
    has_copies = (table.loc[draws, "image_id"] != "p0/img000.jpg").to_numpy()
    share = is_copy[has_copies].mean()
    assert abs(share - 0.5) < 0.03  # binomial std 0.005
    picked = table.loc[draws[is_copy], "copy"].value_counts(normalize=True)
    np.testing.assert_allclose(picked.sort_index().to_numpy(), [1 / K] * K, atol=0.03)
    assert abs(_share(table, 0.2) - 0.2) < 0.03


def _share(table: pd.DataFrame, p: float) -> float:
    draws = np.concatenate([_epoch_rows(table, p, epoch=e) for e in range(50)])
    return float((table.loc[draws, "kind"] == "hallucinated").mean())


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_draws_per_real_image_equal_the_real_arms(p):
    table = _table()
    epochs = range(7)
    arm = pd.Series(np.concatenate([table.loc[_epoch_rows(table, p, epoch=e), "image_id"] for e in epochs]))
    real = _real_only(table)
    base = pd.Series(np.concatenate([real.loc[_epoch_rows(real, p, epoch=e), "image_id"] for e in epochs]))
    assert arm.value_counts().to_dict() == base.value_counts().to_dict() == {i: 7 for i in real["image_id"]}


def test_deterministic_per_seed_and_epoch():
    table = _table()
    a = _epoch_rows(table, 0.5, seed=3, epoch=2)
    np.testing.assert_array_equal(a, _epoch_rows(table, 0.5, seed=3, epoch=2))
    assert not np.array_equal(a, _epoch_rows(table, 0.5, seed=3, epoch=1))
    assert not np.array_equal(a, _epoch_rows(table, 0.5, seed=4, epoch=2))


def test_workers_split_one_epoch():
    table = _table(num_real=41)
    ranks = [_epoch_rows(table, 0.5, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 20 and not set(ranks[0]) & set(ranks[1])
    whole = copy_sampler(table, 0.5)
    mine, rows = whole.draws()
    # the two workers' rows are those the single process draws for the first 40 positions of the epoch
    assert sorted([*ranks[0], *ranks[1]]) == sorted(rows[:40].tolist())
    assert len(set(mine.tolist())) == 41


def test_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match=r"not in \[0, 1\]"):
        CopySampler(np.arange(3), [np.zeros(0, np.int64)] * 3, 1.5)
    with pytest.raises(ValueError, match="rows hold none"):
        copy_sampler(_table().query("kind != 'real'"), 0.5)


# --------------------------------------------------------------------------------------------------- finetune


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> tuple[Path, Path]:
    """A real shard (24 grey crops, 6 identities) and a pipeline manifest with K brighter copies of each."""
    root = tmp_path_factory.mktemp("copies")
    ids = [f"p{i % 6}/img{i:02d}.jpg" for i in range(24)]
    real = np.full((64, 64, 3), REAL_VALUE, np.uint8)
    rows = [{"image_id": i, "identity": i.split("/")[0], "status": "ok", "aligned": encode_png(real)} for i in ids]
    pq.write_table(pa.Table.from_pylist(rows), root / "real.parquet")
    (root / "aug" / "images").mkdir(parents=True)
    copy = encode_png(np.full((64, 64, 3), COPY_VALUE, np.uint8))
    rows = []
    for n, image_id in enumerate(ids):
        for c in range(K):
            rel = f"images/{n:02d}-{c}.png"
            (root / "aug" / rel).write_bytes(copy)
            rows.append(
                {
                    "image_id": image_id,
                    "identity": image_id.split("/")[0],
                    "status": "ok",
                    "output_path": rel,
                    "copy": c,
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), root / "aug" / "manifest.parquet")
    return root / "real.parquet", root / "aug" / "manifest.parquet"


def _cfg(manifests, **changes) -> FinetuneConfig:
    settings = {"data.image_size": 64, "data.val_fraction": 0.25, "batch_size": 3, "epochs": 2}
    return finetune_config(manifests, {**settings, **changes})


@pytest.mark.parametrize("p", [None, 0.0, 1.0])
def test_finetuner_draws_by_probability(manifests, tmp_path, p):
    changes = {} if p is None else {"data.copy_probability": p}
    tuner = Finetuner(_cfg(manifests, **changes), tmp_path, progress=False)
    num_real = 18  # 24 images, 6 held out for validation
    assert len(tuner.train_set) == num_real * (K + 1)
    greys = torch.cat([images.float().mean((1, 2, 3)) for images, _ in tuner._loader(tuner.train_set, 0)])
    if p is None:  # the union: one pass over every row, so about K copies per real crop
        assert tuner.steps_per_epoch == num_real * (K + 1) // 3 and (greys == COPY_VALUE).sum() == num_real * K
    else:  # one pass over the real crops, all real (p = 0) or all copies (p = 1)
        assert tuner.steps_per_epoch == num_real // 3 and len(greys) == num_real
        assert (greys == (COPY_VALUE if p == 1.0 else REAL_VALUE)).all()


def test_frozen_trunk_epochs_keep_the_trunk_then_train_it(manifests, tmp_path):
    cfg = _cfg(manifests, max_steps_per_epoch=1, **{"optim.frozen_trunk_epochs": 1, "data.copy_probability": 0.5})
    tuner = Finetuner(cfg, tmp_path, progress=False)
    images, labels = next(iter(tuner._loader(tuner.train_set, 0)))
    trunk = [p.detach().clone() for p in tuner.net.trunk.parameters()]
    head = tuner.net.head.fc.weight.detach().clone()
    tuner.train_step(images, labels)  # epoch 1: trunk lr 0
    assert all(torch.equal(a, b) for a, b in zip(trunk, tuner.net.trunk.parameters(), strict=True))
    assert not torch.equal(head, tuner.net.head.fc.weight)
    assert tuner.optimizer.param_groups[1]["lr"] > 0  # epoch 2 starts: the trunk trains
    tuner.train_step(images, labels)
    assert not all(torch.equal(a, b) for a, b in zip(trunk, tuner.net.trunk.parameters(), strict=True))


def test_finetune_cli_recipe_options(manifests, tmp_path):
    args = ["finetune", *[a for m in manifests for a in ("--manifest", str(m))], "--out", str(tmp_path), "-n"]
    result = CliRunner().invoke(
        main, [*args, "--copy-probability", "0.5", "--trunk-lr-scale", "0.01", "--frozen-trunk-epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    assert cfg["data"]["copy_probability"] == 0.5
    assert cfg["optim"]["trunk_lr_scale"] == 0.01 and cfg["optim"]["frozen_trunk_epochs"] == 1
    assert json.loads(CliRunner().invoke(main, args).output)["data"]["copy_probability"] is None  # union by default
    bad = CliRunner().invoke(main, [*args, "--copy-probability", "1.5"])
    assert bad.exit_code != 0 and "--copy-probability" in bad.output
    resumed = CliRunner().invoke(main, ["finetune", "--resume", str(tmp_path), "--copy-probability", "0.5"])
    assert resumed.exit_code != 0 and "--resume takes the run's saved config" in resumed.output

"""Training: loss goes down, outputs are written, resume is exact, growth follows the schedule."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from augmentor.cli import main
from augmentor.models import RESOLUTIONS, Cascade, CascadeConfig, input_pyramid
from augmentor.training.checkpoints import load_generator, read_config, save_generator
from augmentor.training.data import load_faces, split_by_identity
from augmentor.training.loop import Trainer, load_train_config, train
from augmentor.training.schedule import progressive_stage


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_split_by_identity_never_shares_identities():
    ids = [str(i % 7) for i in range(50)]
    train_idx, val_idx = split_by_identity(ids, 0.3, seed=1)
    assert len(train_idx) + len(val_idx) == 50
    assert not {ids[i] for i in train_idx} & {ids[i] for i in val_idx}
    assert len({ids[i] for i in val_idx}) == 2
    assert split_by_identity(ids, 0.0)[1].size == 0


def test_load_faces(face_shards, tiny_config):
    faces = load_faces(tiny_config.data)
    assert len(faces) == 10 and faces.images.shape == (10, 3, 128, 128) and faces.images.dtype == torch.uint8
    assert set(faces.masks.unique().tolist()) == {0, 1}
    assert len(faces.fingerprint) == 16


def test_steps_reduce_l1_on_a_fixed_batch(tiny_config, tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(dataclasses.replace(tiny_config, lr_g=1e-3), tmp_path)
    images, masks = trainer.train_images[:4], trainer.train_masks[:4]
    noise = torch.Generator().manual_seed(0)
    first = trainer.train_step(images, masks, 128, 1.0, noise)
    for _ in range(25):
        last = trainer.train_step(images, masks, 128, 1.0, noise)
    assert float(last["l1_128"]) < 0.8 * float(first["l1_128"])
    assert float(last["l1_8"]) < float(first["l1_8"])
    assert {"d_128", "adv_128", "tv_128", "g_total"} <= set(last)


def test_run_outputs_and_checkpoint(tiny_config, tmp_path):
    checkpoint = train(tiny_config, tmp_path / "run")
    run = tmp_path / "run"
    lines = _lines(run)
    assert [m["epoch"] for m in lines] == [1, 2]
    assert all(m["val"] and m["val_loss"] > 0 and m["images_per_second"] > 0 for m in lines)
    grid = Image.open(run / "samples" / "epoch_0002.png")
    assert grid.size == (128 * 7, 128 * 2)  # masked | 5 blocks | truth, 2 faces
    assert (run / "loss_curves.png").stat().st_size > 5000
    assert load_train_config(run) == tiny_config
    config = read_config(checkpoint)
    assert config["data_fingerprint"] and config["architecture"]["widths"]["128"] == 8
    model, _ = load_generator(checkpoint)
    assert isinstance(model, Cascade) and model.config == tiny_config.model


def test_checkpoint_round_trip(tmp_path, tiny_widths):
    torch.manual_seed(0)
    cfg = CascadeConfig(widths=dict(tiny_widths), noise_channels=1)
    model = Cascade(cfg).eval()
    save_generator(model, tmp_path / "full", {"note": "x"})
    save_generator(model, tmp_path / "half", dtype=torch.bfloat16)
    image = torch.rand(2, 3, 128, 128) * 2 - 1
    mask = (torch.rand(2, 1, 128, 128) > 0.5).float()
    levels = input_pyramid(image * mask, mask, cfg.resolutions)

    def run(m):
        return m(levels, generator=torch.Generator().manual_seed(3))[128]

    loaded, config = load_generator(tmp_path / "full")
    assert config["note"] == "x" and loaded.config == cfg
    assert torch.equal(run(model), run(loaded))
    half, _ = load_generator(tmp_path / "half")
    torch.testing.assert_close(run(half), run(model), atol=0.05, rtol=0)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an augmentor-cascade"):
        load_generator(tmp_path / "bad")
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "nothing")


def test_resume_matches_an_uninterrupted_run(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, epochs=3)
    train(cfg, tmp_path / "straight")
    train(dataclasses.replace(cfg, epochs=1), tmp_path / "split")
    train(cfg, tmp_path / "split", resume=True)
    straight, split = _lines(tmp_path / "straight"), _lines(tmp_path / "split")
    assert [m["epoch"] for m in split] == [1, 2, 3]
    for a, b in zip(straight, split):
        assert a["step"] == b["step"]
        for key in a["train"]:
            assert b["train"][key] == pytest.approx(a["train"][key], rel=1e-4, abs=1e-6), key
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    w1, _ = load_generator(tmp_path / "straight" / "last")
    w2, _ = load_generator(tmp_path / "split" / "last")
    for (k, v1), v2 in zip(w1.state_dict().items(), w2.state_dict().values()):
        torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5, msg=k)


def test_init_from_a_run_copies_its_weights(tiny_config, tmp_path):
    train(dataclasses.replace(tiny_config, epochs=1), tmp_path / "first")
    source, _ = load_generator(tmp_path / "first" / "last")
    tuned = Trainer(tiny_config, tmp_path / "tuned")
    d_before = {k: v.clone() for k, v in tuned.discriminators.state_dict().items()}
    tuned.load_init(tmp_path / "first")
    for (k, v1), v2 in zip(source.state_dict().items(), tuned.generator.state_dict().values()):
        torch.testing.assert_close(v1, v2, msg=k)
    d_after = tuned.discriminators.state_dict()
    assert any(not torch.equal(d_after[k], d_before[k]) for k in d_before)  # the run's discriminators came too
    # a checkpoint folder works as well; a different architecture is a clear error
    Trainer(tiny_config, tmp_path / "ckpt").load_init(tmp_path / "first" / "checkpoint")
    wider = dataclasses.replace(tiny_config.model, widths={**tiny_config.model.widths, 128: 16})
    with pytest.raises(ValueError, match="init_from"):
        Trainer(dataclasses.replace(tiny_config, model=wider), tmp_path / "bad").load_init(tmp_path / "first")


def test_fine_tune_run_starts_from_init_from_and_resumes_without_it(tiny_config, tmp_path):
    import shutil

    train(dataclasses.replace(tiny_config, epochs=1), tmp_path / "first")
    source, _ = load_generator(tmp_path / "first" / "last")
    frozen = dataclasses.replace(tiny_config, epochs=1, lr_g=0.0, lr_d=0.0, init_from=str(tmp_path / "first"))
    checkpoint = train(frozen, tmp_path / "tuned")  # lr 0: the weights stay those it started from
    tuned, config = load_generator(tmp_path / "tuned" / "last")
    for (k, v1), v2 in zip(source.named_parameters(), tuned.parameters()):
        torch.testing.assert_close(v1, v2, msg=k)
    assert config["init_from"] == str(tmp_path / "first") and config["epochs_trained"] == 1 and checkpoint.is_dir()
    shutil.rmtree(tmp_path / "first")
    cfg = load_train_config(tmp_path / "tuned")
    train(dataclasses.replace(cfg, epochs=2), tmp_path / "tuned", resume=True)  # resume reads only its own run
    assert [m["epoch"] for m in _lines(tmp_path / "tuned")] == [1, 2]


def test_progressive_schedule():
    res = RESOLUTIONS
    assert progressive_stage(0, 0.0, res, 2) == (8, 1.0)
    assert progressive_stage(1, 0.9, res, 2) == (8, 1.0)
    assert progressive_stage(2, 0.0, res, 2) == (16, 0.0)
    assert progressive_stage(2, 0.5, res, 2) == (16, pytest.approx(0.5))  # a quarter of the stage, half the fade
    assert progressive_stage(3, 0.0, res, 2) == (16, 1.0)
    assert progressive_stage(8, 0.0, res, 2) == (128, 0.0)
    assert progressive_stage(40, 0.3, res, 2) == (128, 1.0)  # the last stage lasts until the end
    assert progressive_stage(4, 0.0, res, 2, fade_fraction=0) == (32, 1.0)
    with pytest.raises(ValueError):
        progressive_stage(0, 0.0, res, 0)


def test_progressive_run_grows(tiny_config, tmp_path):
    cfg = dataclasses.replace(
        tiny_config, regime="progressive", epochs=5, stage_epochs=1, fade_fraction=0.5, max_steps_per_epoch=2
    )
    train(cfg, tmp_path)
    lines = _lines(tmp_path)
    assert [m["resolution"] for m in lines] == [8, 16, 32, 64, 128]
    keys = set(lines[2]["train"]) - {"g_total"}
    assert {"d_32", "l1_32", "tv_32", "adv_32", "d_real_32", "d_fake_32"} <= keys
    assert {k.rsplit("_", 1)[1] for k in keys} == {"32"}  # losses on the top block only
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()


def test_early_stopping_on_plateau(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, epochs=6, patience=2, lr_g=0.0, lr_d=0.0, max_steps_per_epoch=1)
    train(cfg, tmp_path)
    assert len(_lines(tmp_path)) == 3  # the first epoch sets the best; two more without improvement stop it


def test_cli_train_dry_run_and_run(face_shards, tmp_path):
    runner = CliRunner()
    args = [
        "train",
        "--data",
        str(face_shards),
        "--config",
        "configs/train/tiny.yaml",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--set",
        "max_steps_per_epoch=1",
    ]
    dry = runner.invoke(main, [*args, "-n"])
    assert dry.exit_code == 0, dry.output
    resolved = json.loads(dry.output)
    assert resolved["run_dir"].endswith("00000-cascade-tiny") and resolved["max_steps_per_epoch"] == 1
    result = runner.invoke(main, [*args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "00000-cascade-tiny" / "checkpoint" / "config.json").is_file()
    again = runner.invoke(main, [*args, "-n"])
    assert json.loads(again.output)["run_dir"].endswith("00001-cascade-tiny")
    bad = runner.invoke(main, ["train", "--resume", str(tmp_path / "00000-cascade-tiny"), "--epochs", "3"])
    assert bad.exit_code == 2 and "saved config" in bad.output
    no_data = runner.invoke(main, ["train", "--out", str(tmp_path), "-n"])
    assert no_data.exit_code == 2 and "--data" in no_data.output
    typo = runner.invoke(main, [*args, "--set", "loss.identiy=1"])
    assert typo.exit_code == 1 and "unknown key" in typo.output


@pytest.mark.parametrize("folder", ["2024", "yes"])
def test_cli_train_takes_any_folder_name(face_shards, tmp_path, monkeypatch, folder):
    """Bug: the --data path went unquoted into the YAML overrides, so these names failed with "expected str"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / folder).symlink_to(face_shards, target_is_directory=True)
    result = CliRunner().invoke(main, ["train", "--data", folder, "--out", "runs", "-n"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["data"]["path"] == folder

"""The training-run machinery shared by the cascade's Trainer and the recognition Finetuner: counters, crash-safe
saves (all or nothing, checked on resume), and a real kill between the steps of a save."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from augmentor.atomic import recover_folders, replace_folders
from augmentor.models import Cascade, CascadeConfig
from augmentor.training.checkpoints import load_generator, save_generator
from augmentor.training.loop import Trainer, train
from augmentor.training.run_state import RunCounters, epoch_seed, load_resume

ROOT = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands for a kill: a BaseException, so no `except Exception` in the code under test can swallow it."""


def _kill_at(monkeypatch, n: int) -> list[int]:
    """Make the ``n``-th rename from now on raise :class:`Killed` (0: none); returns the list counting renames.

    The code under test cleans up nothing on a failure, so this leaves the disk as a real kill would.
    """
    calls, real = [], os.replace

    def replace(src, dst):
        calls.append(1)
        if len(calls) == n:
            raise Killed(f"killed at rename {n}")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_counters_move_best_only_on_a_real_gain():
    counters = RunCounters()
    assert counters.end_epoch(1.0, min_delta=0.1) and counters.best == 1.0
    assert not counters.end_epoch(0.95, min_delta=0.1)  # a gain under min_delta: best stays, patience runs
    assert counters.best == 1.0 and counters.bad_epochs == 1
    assert not counters.end_epoch(0.5, min_delta=0.1, counts=False)  # not comparable: no gain, patience reset
    assert counters.bad_epochs == 0 and counters.best == 1.0 and counters.epoch == 3
    assert not counters.patience_spent(0) and not counters.patience_spent(2)
    counters.end_epoch(2.0, 0.1), counters.end_epoch(2.0, 0.1)
    assert counters.patience_spent(2) and RunCounters.from_state(counters.to_state()) == counters
    assert epoch_seed(1, 2) != epoch_seed(2, 1) and epoch_seed(0, 3) == 3


def _write(text: str):
    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "a.txt").write_text(text)
        (folder / "b.txt").write_text(text)

    return write


def _read(root: Path) -> set[str]:
    return {(root / name / f).read_text() for name in ("x", "y") for f in ("a.txt", "b.txt")}


def test_a_folder_set_is_replaced_all_or_nothing(tmp_path, monkeypatch):
    replace_folders(tmp_path, {"x": _write("old"), "y": _write("old")})
    calls = _kill_at(monkeypatch, 0)  # never: counts the renames of one save
    replace_folders(tmp_path, {"x": _write("mid"), "y": _write("mid")})
    renames = len(calls)
    monkeypatch.undo()
    assert renames >= 3  # the completion mark and the two folders, at least
    for n in range(1, renames + 1):  # a kill at every rename of a save
        _kill_at(monkeypatch, n)
        with pytest.raises(Killed):
            replace_folders(tmp_path, {"x": _write(f"new{n}"), "y": _write(f"new{n}")})
        monkeypatch.undo()
        recover_folders(tmp_path)
        assert _read(tmp_path) in ({"mid"}, {f"new{n}"}), n  # one save's folders, whole
        replace_folders(tmp_path, {"x": _write("mid"), "y": _write("mid")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "y"]  # nothing staged is left behind


def test_folder_names_may_hold_spaces(tmp_path):
    replace_folders(tmp_path, {"a b (c)": _write("one"), "d": _write("one")})
    replace_folders(tmp_path, {"a b (c)": _write("two"), "d": _write("two")})
    assert (tmp_path / "a b (c)" / "a.txt").read_text() == "two" and (tmp_path / "d" / "b.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a b (c)", "d"]


def test_a_checkpoint_is_never_left_without_weights(tmp_path, monkeypatch, tiny_widths):
    """Bug: write_checkpoint deleted model.safetensors before writing the new one."""
    old = Cascade(CascadeConfig(widths=dict(tiny_widths)))
    new = Cascade(CascadeConfig(widths=dict(tiny_widths)))
    folder = save_generator(old, tmp_path / "checkpoint", {"which": "old"})
    (folder / "README.md").write_text("kept")
    for n in (1, 2, 3):
        _kill_at(monkeypatch, n)
        with pytest.raises(Killed):
            save_generator(new, folder, {"which": "new"})
        monkeypatch.undo()
        model, config = load_generator(folder)  # finishes a save that got past its completion mark
        reference = old if config["which"] == "old" else new
        for (k, v), w in zip(model.state_dict().items(), reference.state_dict().values()):
            torch.testing.assert_close(v, w, msg=k)
        assert (folder / "README.md").read_text() == "kept"


def _assert_consistent(run: Path, cfg, weights: dict[int, dict]) -> None:
    """A resume gets the weights of the epoch its counters name, and last/ says the same epoch."""
    resumed = Trainer(cfg, run)
    resumed.load_resume()
    epoch = resumed.counters.epoch
    assert epoch in weights and json.loads((run / "last" / "config.json").read_text())["epochs_trained"] == epoch
    for (k, v), w in zip(resumed.generator.state_dict().items(), weights[epoch].values()):
        torch.testing.assert_close(v, w, msg=k)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, face_shards):
    """(config, run folder) of configs/train/tiny.yaml trained for one step; tests take a copy (:func:`_copy`)."""
    from augmentor.config import load_config
    from augmentor.training.loop import TrainConfig

    overrides = [f"data.path={face_shards}", "device=cpu", "epochs=1", "max_steps_per_epoch=1"]
    cfg = load_config(TrainConfig, ROOT / "configs" / "train" / "tiny.yaml", overrides)
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    train(cfg, run)
    return cfg, run


def _copy(one_epoch, tmp_path: Path) -> tuple:
    cfg, run = one_epoch
    return cfg, Path(shutil.copytree(run, tmp_path / "run"))


def test_a_trainer_killed_mid_save_resumes_consistently(one_epoch, tmp_path, monkeypatch):
    """Bug: last/, the discriminators and state.pt were three separate writes, and a resume never compared them."""
    cfg, run = _copy(one_epoch, tmp_path)
    trainer = Trainer(cfg, run)
    trainer.load_resume()
    first = dataclasses.replace(trainer.counters)
    second = dataclasses.replace(first, epoch=first.epoch + 1, step=first.step + 1)
    weights = {1: {k: v.clone() for k, v in trainer.generator.state_dict().items()}}
    with torch.no_grad():
        for p in trainer.generator.parameters():
            p.add_(1.0)  # stands for a second epoch of training
    weights[2] = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    trainer.counters = dataclasses.replace(second)
    calls = _kill_at(monkeypatch, 0)  # never: counts the renames of one save
    trainer.save_resume()
    renames = len(calls)
    monkeypatch.undo()
    assert renames >= 4
    for n in range(1, renames + 1):  # a kill at every rename of a save
        trainer.generator.load_state_dict(weights[1])
        trainer.counters = dataclasses.replace(first)
        trainer.save_resume()
        trainer.generator.load_state_dict(weights[2])
        trainer.counters = dataclasses.replace(second)
        _kill_at(monkeypatch, n)
        with pytest.raises(Killed):
            trainer.save_resume()
        monkeypatch.undo()
        _assert_consistent(run, cfg, weights)


def test_a_resume_refuses_folders_of_different_epochs(one_epoch, tmp_path):
    """What an older augmentor killed mid-save left: last/ of epoch 2, resume/ of epoch 1."""
    _, run = _copy(one_epoch, tmp_path)
    config = json.loads((run / "last" / "config.json").read_text())
    (run / "last" / "config.json").write_text(json.dumps({**config, "epochs_trained": 2}))
    with pytest.raises(ValueError, match="last/ holds epoch 2 .* epoch 1"):
        load_resume(run, "cpu")


KILLER = """
import os, signal, sys
from pathlib import Path
import torch
from augmentor.config import load_config
from augmentor.training.loop import Trainer, TrainConfig

run, shards, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cfg = load_config(TrainConfig, sys.argv[4], [f"data.path={shards}", "device=cpu", "epochs=1", "max_steps_per_epoch=1"])
trainer = Trainer(cfg, run)
trainer.load_resume()
with torch.no_grad():
    for p in trainer.generator.parameters():
        p.add_(1.0)
trainer.counters.epoch += 1
trainer.counters.step += 1
calls, real = [], os.replace
def replace(src, dst):
    calls.append(1)
    if len(calls) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
trainer.save_resume()
"""


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 5])  # while the folders are staged / between renaming them into place
def test_a_real_kill_between_the_steps_of_a_save(one_epoch, tmp_path, face_shards, n):
    cfg, run = _copy(one_epoch, tmp_path)
    before, _ = load_generator(run / "last")
    tiny_yaml = ROOT / "configs" / "train" / "tiny.yaml"
    script = textwrap.dedent(KILLER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(run), str(face_shards), str(n), str(tiny_yaml)], env=env, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".saving") for p in run.iterdir())  # the kill landed mid-save
    params = {name for name, _ in before.named_parameters()}
    after = {k: v + 1.0 if k in params else v for k, v in before.state_dict().items()}
    _assert_consistent(run, cfg, {1: before.state_dict(), 2: after})

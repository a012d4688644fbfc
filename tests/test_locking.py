"""One writer per output folder (bug: two `augmentor run` on one --out both did all the work)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.locking import LOCK_FILE, FolderInUseError, output_lock

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_writer_is_refused_with_the_name_of_the_first(tmp_path):
    expected = rf"in use by pid {os.getpid()} .*`augmentor run`"
    first = output_lock(tmp_path / "out", "augmentor run")
    second = output_lock(tmp_path / "out", "augmentor run")
    with first, pytest.raises(FolderInUseError, match=expected), second:
        pass
    with output_lock(tmp_path / "out", "augmentor run"):  # released at the end of the block
        assert (tmp_path / "out" / LOCK_FILE).is_file()


def test_a_killed_writer_leaves_no_stuck_lock(tmp_path):
    holder = "import sys, time; from augmentor.locking import output_lock\n" \
             "with output_lock(sys.argv[1], 'augmentor preprocess'):\n    print('locked', flush=True); time.sleep(60)"  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        expected = rf"pid {proc.pid} .*augmentor preprocess"
        with pytest.raises(FolderInUseError, match=expected), output_lock(tmp_path, "augmentor preprocess"):
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with output_lock(tmp_path, "augmentor preprocess"):  # the kernel dropped the dead process's lock
        pass


@pytest.mark.parametrize("command", ["run", "preprocess"])
def test_commands_refuse_a_folder_in_use(tmp_path, command):
    out = tmp_path / "out"
    with output_lock(out, "augmentor run"):
        result = CliRunner().invoke(main, [command, "--out", str(out), "--limit", "2", "--no-progress"])
    assert result.exit_code == 1 and f"in use by pid {os.getpid()}" in result.output, result.output
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing was written


def test_train_and_finetune_refuse_a_run_folder_in_use(tmp_path):
    from augmentor.training.loop import TrainConfig, train
    from recognition.finetune import FinetuneConfig, finetune

    with output_lock(tmp_path, "augmentor train"):
        with pytest.raises(FolderInUseError):
            train(TrainConfig(), tmp_path)
        with pytest.raises(FolderInUseError):
            finetune(FinetuneConfig(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]

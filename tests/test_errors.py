"""The CLI turns the errors our code raises for bad input into one line, and lets every other error through."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.errors import InputError
from augmentor.samples import SAMPLES_LIST


def _checkpoint(tmp_path, fmt="not-a-cascade"):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"format": fmt, "format_version": 1}))
    return folder


def _report(tmp_path, entry):
    folder = tmp_path / "lfw"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({"models": {"m": entry}, "pairs": "pairs.txt", "num_pairs": 2}))
    return folder


def _pairs(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1\t1\n")
    return path


def test_every_input_error_class_is_one():
    from augmentor.config import ConfigError
    from augmentor.dataset_export.export import ExportError
    from augmentor.dataset_export.sources import SourceError
    from augmentor.datasets import DatasetError
    from augmentor.locking import FolderInUseError
    from augmentor.parquet import CorruptFileError
    from recognition.contexts import ContextError
    from recognition.data import ManifestError
    from recognition.embedders.spec import SpecError
    from recognition.lfw import PairsError

    kinds = (ConfigError, ExportError, SourceError, DatasetError, FolderInUseError, CorruptFileError, ContextError)
    for kind in (*kinds, ManifestError, SpecError, PairsError):
        assert issubclass(kind, InputError) and issubclass(kind, ValueError), kind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda t: ["export", "--checkpoint", str(_checkpoint(t)), "--out", str(t / "o")], "is not an augmentor"),
        (lambda t: ["compare", str(_report(t, {"num_folds": 2}))], "lacks fold_accuracy"),
        (lambda t: ["train", "--data", str(t), "--set", "batch_size=x", "-n"], "batch_size"),
    ],
    ids=["export", "compare", "train-config"],
)
def test_a_user_error_is_one_clean_line(tmp_path, args, message):
    result = CliRunner().invoke(main, args(tmp_path))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # click's ClickException, not a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


@pytest.mark.parametrize("kind", [ValueError, RuntimeError, KeyError])
@pytest.mark.parametrize(
    ("target", "args"),
    [
        ("augmentor.training.export.export_generator", lambda t: ["export", "--checkpoint", str(t), "--out", str(t)]),
        ("recognition.compare.read_runs", lambda t: ["compare", str(t)]),
        ("augmentor.training.pack.build_pack", lambda t: ["pack", "--data", str(t), "--out", str(t / "p")]),
        ("augmentor.training.loop.train", lambda t: ["train", "--data", str(t), "--out", str(t / "runs")]),
        (
            "augmentor.preprocessing.preprocess.preprocess",
            lambda t: ["preprocess", "--out", str(t / "p"), "--limit", "1", "--no-progress"],
        ),
        (
            "augmentor.dataset_export.export.export_dataset",
            lambda t: ["export-dataset", str(t), "--to", "imagefolder", "--out", str(t / "x")],
        ),
        (
            "augmentor.evaluation.evaluate.evaluate",
            lambda t: [
                "evaluate",
                "--baselines-only",
                "--dataset",
                "list",
                "--root",
                str(SAMPLES_LIST),
                "--out",
                str(t),
            ],
        ),
        ("pipelines.augment.run", lambda t: ["run", "--out", str(t / "r"), "--no-progress"]),
        (
            "recognition.finetune.finetune",
            lambda t: ["finetune", "--manifest", str(t), "--out", str(t / "runs"), "--device", "cpu"],
        ),
        (
            "recognition.verify.verify_lfw",
            lambda t: ["verify-lfw", "--model", "dlib", "--root", str(t), "--pairs", str(_pairs(t)), "--out", str(t)],
        ),
    ],
    ids=["export", "compare", "pack", "train", "preprocess", "export-dataset", "evaluate", "run", "finetune", "verify"],
)
def test_a_bug_deep_inside_a_job_keeps_its_traceback(tmp_path, monkeypatch, target, args, kind):
    module, name = target.rsplit(".", 1)

    def broken(*_args, **_kwargs):
        raise kind("shapes [2, 3] and [3, 2] do not match")  # what a bug (or out of memory) raises

    monkeypatch.setattr(f"{module}.{name}", broken)
    result = CliRunner().invoke(main, args(tmp_path))
    assert type(result.exception) is kind, result.output  # not turned into "Error: ..."
    assert "Error:" not in result.output


def test_a_ray_job_resumes_after_lost_workers_but_not_after_a_stage_bug():
    ray = pytest.importorskip("ray")
    from pipelines.augment import resumable

    bug = ray.exceptions.RayTaskError("PredictAndWrite.__call__", "Traceback ...", ValueError("shape mismatch"))
    assert not resumable(bug) and not resumable(bug.as_instanceof_cause())
    assert not resumable(ray.exceptions.UserCodeException("UDF failed to process a data block."))
    refused = ray.exceptions.RayTaskError("Predictor.__init__", "Traceback ...", InputError("outputs 64 px"))
    assert resumable(refused)
    assert resumable(ray.exceptions.ActorDiedError()) and resumable(ray.exceptions.NodeDiedError("node gone"))
    assert resumable(ray.exceptions.WorkerCrashedError())


def test_user_errors_turns_bad_input_into_one_line_and_lets_bugs_through():
    import click

    from augmentor.cli_errors import user_errors
    from augmentor.config import ConfigError
    from augmentor.resources import MissingModelFileError

    for error in (ConfigError("bad key x"), MissingModelFileError("no model.dat"), FileNotFoundError("gone")):
        with pytest.raises(click.ClickException) as caught, user_errors():
            raise error
        assert caught.value.message == str(error) and caught.value.__cause__ is error
    with pytest.raises(click.ClickException, match="lost the cluster"), user_errors(ConnectionError):
        raise ConnectionError("lost the cluster")
    for bug in (ValueError("shape"), RuntimeError("out of memory"), KeyError("k"), ConnectionError("c")):
        with pytest.raises(type(bug)), user_errors():
            raise bug
    with pytest.raises(click.BadParameter), user_errors():  # already a one-line error: unchanged
        raise click.BadParameter("no --out")

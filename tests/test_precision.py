"""Inference precision: resolving auto, autocast, and bf16 against fp32 in the Hallucinator and the Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augmentor import precision as P
from augmentor.hallucinator import Hallucinator


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoints):
    return tiny_checkpoints / "plain"


@pytest.fixture(scope="module")
def faces(lfw_images):
    from augmentor.faces import FaceMasker

    found = [FaceMasker()(p) for p in lfw_images[:2]]
    return np.stack([f.masked for f in found]), np.stack([f.mask for f in found]), np.stack([f.aligned for f in found])


def test_check_and_resolve(monkeypatch):
    with pytest.raises(ValueError, match="one of auto, fp32, bf16"):
        P.check_precision("fp16")
    assert P.resolve_precision("fp32", "cpu") == "fp32" and P.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert P.resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 would be slower
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert P.resolve_precision("auto", "cuda") == "bf16"  # a CPU head node planning for GPU workers
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert P.resolve_precision("auto", "cuda") == "fp32"


def test_autocast_runs_bf16_or_nothing():
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with P.autocast("bf16", "cpu"):
        assert layer(x).dtype == torch.bfloat16
    with P.autocast("fp32", "cpu"):
        assert layer(x).dtype == torch.float32
    with pytest.raises(ValueError, match="resolve 'auto'"):
        P.autocast("auto", "cpu")


def test_hallucinator_bf16_is_close_to_fp32_and_keeps_face_pixels(checkpoint, faces):
    masked, mask, aligned = faces
    fp32 = Hallucinator.from_pretrained(checkpoint, device="cpu")
    assert fp32.precision == "fp32"  # the default: quality figures must not depend on the instruction set
    bf16 = Hallucinator.from_pretrained(checkpoint, device="cpu", precision="bf16")
    a, b = fp32(masked, mask), bf16(masked, mask)
    inside = mask.astype(bool)
    assert np.array_equal(b[inside], aligned[inside]) and np.array_equal(a[inside], aligned[inside])
    diff = np.abs(a.astype(int) - b.astype(int))[~inside]
    assert diff.mean() < 1.0 and diff.max() <= 8
    x = torch.from_numpy(masked).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert bf16(x, torch.from_numpy(mask)[:, None].float()).dtype == torch.float32  # outputs stay float32
    with pytest.raises(ValueError, match="precision must be"):
        Hallucinator.from_pretrained(checkpoint, device="cpu", precision="half")


def test_predictor_scores_in_bf16(checkpoint, faces):
    from pipelines.stages import Predictor

    _, mask, aligned = faces
    batch = {
        "image_id": np.asarray(["a/1", "b/1"], dtype=object),
        "identity": np.asarray(["a", "b"], dtype=object),
        "label": np.asarray([0, 1], np.int32),
        "path": np.asarray(["a.jpg", "b.jpg"], dtype=object),
        "out_stem": np.asarray(["a/1", "b/1"], dtype=object),
        "todo": np.asarray([1, 1], np.int64),
        "status": np.asarray(["ok", "ok"], dtype=object),
        "reason": np.asarray(["", ""], dtype=object),
        "mask_area": mask.mean(axis=(1, 2)).astype(np.float32),
        "aligned": aligned,
        "mask": mask,
        "mask_s": np.zeros(2),
    }
    results = {}
    for name in ("fp32", "bf16"):
        predictor = Predictor(str(checkpoint), device="cpu", batch_size=2, precision=name)
        assert predictor.precision == name and predictor.hallucinator.precision == name
        results[name] = predictor(batch)
    scores = {name: out["match_score"] for name, out in results.items()}
    assert scores["bf16"].dtype == np.float32 and np.isfinite(scores["bf16"]).all()
    assert np.abs(scores["bf16"] - scores["fp32"]).max() < 0.02
    assert Predictor(str(checkpoint), device="cpu", batch_size=2).precision == P.resolve_precision("auto", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_means_one_thing_and_the_resolved_value_is_kept(checkpoint, monkeypatch, native):
    """Bug: the Hallucinator read auto as bf16 on CUDA only, precision.py as bf16 wherever it is native."""
    monkeypatch.setattr(P, "native_bf16", lambda device: native)
    expected = "bf16" if native else "fp32"
    assert P.resolve_precision("auto", "cpu") == expected
    assert Hallucinator.from_pretrained(checkpoint, device="cpu", precision="auto").precision == expected
    from pipelines.plan import plan_resources

    assert plan_resources(4, 0, None, None, "auto").precision == expected


def test_every_precision_option_has_the_one_help_text():
    from click.testing import CliRunner

    from augmentor.cli import main

    for command in ("run", "evaluate"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert " ".join(P.PRECISION_HELP.split()) in text, command

"""Sharded checkpoints and `augmentor export` (bf16 shipping copies of a trained generator)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.models import Cascade, CascadeConfig
from augmentor.training.checkpoints import INDEX_FILE, load_generator, read_state, save_generator
from augmentor.training.export import export_generator
from pipelines.manifest import model_id

WIDTHS = {4: 8, 8: 8, 16: 8, 32: 8, 64: 4, 128: 4}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = Cascade(CascadeConfig(widths=WIDTHS))
    path = save_generator(model, tmp_path_factory.mktemp("ckpt") / "checkpoint", {"epochs_trained": 3, "steps": 7})
    return model, path


def test_shards_round_trip_exactly(trained, tmp_path):
    model, _ = trained
    total = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    save_generator(model, tmp_path, max_shard_bytes=total // 3)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and not (tmp_path / "model.safetensors").exists()
    biggest = max(v.numel() * v.element_size() for v in model.state_dict().values())
    assert all(p.stat().st_size <= max(total // 3, biggest) + 4096 for p in shards)  # + the safetensors header
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(model.state_dict()) and index["metadata"]["total_size"] == total
    loaded, _ = load_generator(tmp_path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert len(model_id(tmp_path)) == 16

    save_generator(model, tmp_path)  # rewriting as one file removes the shards: never two copies to choose from
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]

    save_generator(model, tmp_path, max_shard_bytes=total // 3)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match="names it"):
        read_state(tmp_path)


def test_export_to_bf16_halves_the_size_and_keeps_the_outputs(trained, tmp_path):
    _, source = trained
    report = export_generator(source, tmp_path / "ship", "bfloat16", max_shard_mb=None, extra={"model_card": "x.md"})
    assert report["files"] == ["config.json", "model.safetensors"]
    size = (tmp_path / "ship" / "model.safetensors").stat().st_size
    assert size < 0.6 * (source / "model.safetensors").stat().st_size
    assert 0 < report["max_abs_diff"] < 0.05  # bf16 rounding, not a different model
    stored = read_state(tmp_path / "ship")
    assert all(v.dtype == torch.bfloat16 for v in stored.values() if v.is_floating_point())
    config = json.loads((tmp_path / "ship" / "config.json").read_text())
    assert config["epochs_trained"] == 3 and config["stored_dtype"] == "bfloat16" and config["model_card"] == "x.md"
    assert config["exported_from"] == str(source)
    with pytest.raises(ValueError, match="dtype must be"):
        export_generator(source, tmp_path / "bad", "int8")


def test_export_command(trained, tmp_path):
    _, source = trained
    result = CliRunner().invoke(
        main, ["export", "--checkpoint", str(source), "--out", str(tmp_path / "o"), "--max-shard-mb", "0.1"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len([f for f in report["files"] if f.startswith("model-")]) >= 2 and INDEX_FILE in report["files"]
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "config.json not found" in result.output

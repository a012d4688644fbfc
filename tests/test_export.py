"""Sharded checkpoints and `augmentor export` (bf16 shipping copies of a trained generator)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from augmentor.cli import main
from augmentor.manifest import model_id
from augmentor.models import Cascade, CascadeConfig, input_pyramid
from augmentor.training.checkpoints import INDEX_FILE, load_generator, read_state, save_generator
from augmentor.training.export import export_generator
from augmentor.training.interpolate import blend_states, interpolate_generators

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


def _outputs(model, noise_channels=2):
    """The top level of ``model`` on one seeded masked input, with fixed noise for models that take it."""
    g = torch.Generator().manual_seed(1)
    size = model.resolutions[-1]
    masked = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    noise = {r: torch.randn(2, noise_channels, r, r, generator=g) for r in model.resolutions}
    levels = input_pyramid(masked * mask, mask, model.resolutions)
    kwargs = {"noise": noise} if model.config.noise_channels else {}
    with torch.no_grad():
        return model.eval()(levels, **kwargs)[size]


def test_blend_states_is_linear_and_refuses_mismatches():
    base = {"w": torch.zeros(2, 3), "n": torch.tensor(1)}
    tuned = {"w": torch.full((2, 3), 4.0), "n": torch.tensor(7)}
    assert torch.equal(blend_states(base, tuned, 0.0)["w"], base["w"])
    assert torch.equal(blend_states(base, tuned, 1.0)["w"], tuned["w"])
    half = blend_states(base, tuned, 0.25)
    assert torch.allclose(half["w"], torch.ones(2, 3)) and int(half["n"]) == 7  # counters are not blended
    with pytest.raises(ValueError, match="different tensors"):
        blend_states({"w": base["w"]}, tuned, 0.5)
    with pytest.raises(ValueError, match="shape"):
        blend_states({"w": torch.zeros(3, 2), "n": base["n"]}, tuned, 0.5)
    with pytest.raises(ValueError, match="finite"):
        blend_states(base, tuned, float("nan"))


def test_interpolation_spans_base_and_tuned_across_grown_noise_inputs(tmp_path):
    torch.manual_seed(3)
    base = Cascade(CascadeConfig(widths=WIDTHS))  # no noise inputs, like the shipped interim model
    tuned = Cascade(CascadeConfig(widths=WIDTHS, noise_channels=2))  # its GAN fine-tune gained two
    base_dir, tuned_dir = save_generator(base, tmp_path / "base"), save_generator(tuned, tmp_path / "tuned")

    at0, config = interpolate_generators(base_dir, tuned_dir, 0.0)
    assert config["interpolation"] == {"base": str(base_dir), "tuned": str(tuned_dir), "alpha": 0.0}
    assert torch.allclose(_outputs(at0), _outputs(base), atol=1e-5)  # grown noise weights are zero at alpha 0
    at1, _ = interpolate_generators(base_dir, tuned_dir, 1.0)
    assert torch.allclose(_outputs(at1), _outputs(tuned), atol=1e-5)  # b + (t - b) rounds
    mid, _ = interpolate_generators(base_dir, tuned_dir, 0.5)
    for name, value in mid.state_dict().items():
        if name.endswith("stem.0.weight"):  # the noise columns: half the tuned weights, the base had none
            assert torch.allclose(value[:, -2:], 0.5 * tuned.state_dict()[name][:, -2:])
    out = _outputs(mid)
    assert (out - _outputs(base)).abs().max() > 1e-3 and (out - _outputs(tuned)).abs().max() > 1e-3

    other = save_generator(Cascade(CascadeConfig(widths={**WIDTHS, 128: 8})), tmp_path / "wider")
    with pytest.raises(ValueError, match="cannot be blended"):
        interpolate_generators(other, tuned_dir, 0.5)


def test_export_command_interpolates(trained, tmp_path):
    _, source = trained
    torch.manual_seed(5)
    base = save_generator(Cascade(CascadeConfig(widths=WIDTHS)), tmp_path / "base")
    out = tmp_path / "blend"
    args = ["export", "--checkpoint", str(source), "--out", str(out), "--dtype", "float32"]
    result = CliRunner().invoke(main, [*args, "--interpolate-from", str(base), "--alpha", "0.3"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["interpolation"]["alpha"] == 0.3 and config["exported_from"] == str(source)
    expected, _ = interpolate_generators(base, source, 0.3)
    loaded, _ = load_generator(out)
    for name, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(source), "--out", str(out), "--alpha", "0.3"])
    assert result.exit_code == 2 and "--alpha needs --interpolate-from" in result.output

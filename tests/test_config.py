from dataclasses import dataclass, field
from pathlib import Path

import pytest

from augmentor.config import ConfigError, from_dict, load_config, to_dict
from augmentor.faces import MaskingConfig, Template


@dataclass
class Inner:
    rate: float = 0.1
    widths: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None


def test_from_dict_builds_nested_and_coerces():
    cfg = from_dict(Outer, {"name": "y", "inner": {"rate": 1, "widths": [3, 4, 5]}, "limit": 7})
    assert cfg == Outer("y", Inner(1.0, (3, 4, 5)), 7)
    assert isinstance(cfg.inner.rate, float)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"nmae": "typo"}, "unknown key"),
        ({"inner": {"rat": 1.0}}, "config.inner: unknown key"),
        ({"name": 3}, "expected str"),
        ({"limit": "many"}, "does not match"),
        ({"inner": {"widths": 3}}, "expected a list"),
    ],
)
def test_from_dict_rejects_bad_input(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_load_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("detector: hog\ntemplate:\n  size: 64\n  left_eye: [25.5, 28]\n")
    cfg = load_config(MaskingConfig, path, ["upsample_fallback=false", "template.right_eye=[38.5, 28]"])
    assert cfg.template == Template(64, (25.5, 28.0), (38.5, 28.0))
    assert cfg.upsample_fallback is False
    assert to_dict(cfg)["template"]["left_eye"] == [25.5, 28.0]
    with pytest.raises(ConfigError, match="one of"):
        load_config(MaskingConfig, None, ["detector=cnn"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(MaskingConfig, None, ["detector"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(MaskingConfig, tmp_path / "missing.yaml")


SHIPPED = Path(__file__).resolve().parents[1] / "configs"


def _config_class(path: Path) -> type:
    """The dataclass a shipped config file fills, from where it lives."""
    from augmentor.training.loop import TrainConfig
    from recognition.finetune import FinetuneConfig

    folder = path.parent.name
    return {"train": TrainConfig, "recognition": FinetuneConfig, "configs": MaskingConfig}[folder]


@pytest.mark.parametrize("path", sorted(SHIPPED.rglob("*.yaml")), ids=lambda p: str(p.relative_to(SHIPPED)))
def test_every_shipped_config_loads(path):
    """Every YAML under configs/ loads into its dataclass: no stale key survives a rename."""
    cfg = load_config(_config_class(path), path)
    assert to_dict(cfg)  # a real, non-empty config
    if path.name == "preprocess.yaml":
        assert cfg == MaskingConfig()


def test_values_are_taken_as_given_not_parsed_as_yaml():
    """Bug: `augmentor train --data 2024` (or a folder named yes) failed with "expected str"."""
    for name in ("2024", "yes", "null", "1e3", "[a]"):
        cfg = load_config(Outer, None, ["limit=3"], {"name": name, "inner.rate": 0.5})
        assert cfg.name == name and cfg.limit == 3 and cfg.inner.rate == 0.5

"""``verify-lfw --model`` specs of recognisers we do not train: ``KIND:SOURCE[,KEY=VALUE...]``.

* ``onnx:FILE``: an ONNX model (insightface's ``w600k_r50.onnx``, an ``arcface_torch`` export ...), run by
  onnxruntime. The input size is read from the model; the normalisation from its metadata (``input_mean``,
  ``input_std``) or, as insightface decides it, from its first nodes.
* ``torchscript:FILE``: a ``torch.jit.save`` file (arcface_torch's normalisation and 112 px unless told otherwise).
* ``facenet:vggface2``, ``facenet:casia-webface`` or ``facenet:FILE``: facenet-pytorch's ``InceptionResnetV1``.
  The named weights are read from the torch hub cache (:func:`facenet_weights`); nothing is downloaded.

``KEY=VALUE`` options override what is read or assumed: ``size`` (px), ``mean`` and ``std`` (the input is
``(pixel - mean) / std`` on 0..255), ``align`` (``five-point``: the arcface template from our landmarks;
``crop``: the whole aligned crop resized) and ``channels`` (``rgb`` or ``bgr``). This module imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from augmentor.errors import InputError

KINDS = ("onnx", "torchscript", "facenet")
ALIGNS = ("five-point", "crop")
CHANNELS = ("rgb", "bgr")
FACENET_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
FACENET_FILES = {  # facenet-pytorch's pretrained names -> its file names (models/inception_resnet_v1.py)
    "vggface2": "20180402-114759-vggface2.pt",
    "casia-webface": "20180408-102900-casia-webface.pt",
}


class SpecError(InputError):
    """A ``--model`` spec that cannot be used."""


@dataclass(frozen=True)
class InputOptions:
    """How crops become the model's input; ``None`` means: read from the model, else the kind's default."""

    size: int | None = None  # input side in px
    mean: float | None = None  # input = (pixel - mean) / std, pixels 0..255
    std: float | None = None
    align: str = "five-point"  # five-point: arcface template chip; crop: the whole aligned crop resized
    channels: str = "rgb"  # channel order the model expects

    def filled(self, size: int, mean: float, std: float) -> InputOptions:
        """These options with every ``None`` replaced by the given value."""
        return replace(
            self,
            size=self.size if self.size is not None else size,
            mean=self.mean if self.mean is not None else mean,
            std=self.std if self.std is not None else std,
        )


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``KIND:SOURCE[,KEY=VALUE...]``."""

    kind: str  # one of KINDS
    source: str  # the model file, or facenet's pretrained name
    inputs: InputOptions = InputOptions()

    def default_label(self) -> str:
        """``onnx:w600k_r50``, ``facenet:vggface2``: the report label when the user gives no ``NAME=``."""
        name = self.source if self.kind == "facenet" and self.source in FACENET_FILES else Path(self.source).stem
        return f"{self.kind}:{name}"


def is_model_spec(text: str) -> bool:
    """Whether ``text`` starts with a kind (``onnx:``, ``torchscript:``, ``facenet:``)."""
    return text.partition(":")[0] in KINDS and ":" in text


def _option(key: str, value: str, text: str) -> tuple[str, object]:
    names = {f.name for f in fields(InputOptions)}
    if key not in names:
        raise SpecError(f"{text}: unknown option {key!r}; choose from {', '.join(sorted(names))}")
    try:
        if key == "size":
            parsed: object = int(value)
            if not 16 <= parsed <= 1024:
                raise ValueError
        elif key in ("mean", "std"):
            parsed = float(value)
            if key == "std" and parsed <= 0:
                raise ValueError
        else:
            parsed = value
            if value not in (ALIGNS if key == "align" else CHANNELS):
                raise ValueError
    except ValueError as exc:
        raise SpecError(f"{text}: bad value {value!r} for {key}") from exc
    return key, parsed


def parse_model_spec(text: str) -> ModelSpec:
    """``onnx:model.onnx,size=112,mean=127.5`` -> :class:`ModelSpec`.

    Raises:
        SpecError: an unknown kind or option, a bad value, or no source.
    """
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise SpecError(f"{text}: unknown model kind {kind!r}; choose from {', '.join(KINDS)}")
    source, *pairs = rest.split(",")
    if not source:
        raise SpecError(f"{text}: no model after {kind}:")
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SpecError(f"{text}: expected KEY=VALUE after the model, got {pair!r}")
        options.update([_option(key.strip(), value.strip(), text)])
    return ModelSpec(kind, source, InputOptions(**options))


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch's own rule)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


def facenet_weights(source: str) -> Path:
    """The weights file of ``facenet:SOURCE``: a pretrained name looked up in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints/``, then facenet-pytorch's own ``$TORCH_HOME/checkpoints/``), or a path.

    Raises:
        FileNotFoundError: the file is not there; the message says how to supply it (nothing is downloaded).
    """
    if source not in FACENET_FILES:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"facenet:{source}: no such file; give vggface2, casia-webface or the path of an InceptionResnetV1 "
                "state dict"
            )
        return path
    name = FACENET_FILES[source]
    places = [torch_home() / "hub" / "checkpoints" / name, torch_home() / "checkpoints" / name]
    for path in places:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"facenet:{source}: the weights {name} are not in {places[0].parent} nor {places[1].parent}, and nothing is "
        f"downloaded. Copy {FACENET_URL}{name} (fetched on a machine with internet) into {places[0].parent}, set "
        f"TORCH_HOME to the folder whose hub/checkpoints/ holds it, or give its path: facenet:/path/to/{name}"
    )


def check_source(spec: ModelSpec) -> Path:
    """The file behind ``spec``, checked before any work starts.

    Raises:
        FileNotFoundError: it is missing (see :func:`facenet_weights` for facenet's message).
    """
    if spec.kind == "facenet":
        return facenet_weights(spec.source)
    path = Path(spec.source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{spec.kind}:{spec.source}: no such file")
    return path

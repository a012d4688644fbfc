"""``--model NAME=onnx:FILE``: any ONNX face recogniser, run by onnxruntime (CUDA where present and asked for).

The input size and layout come from the model's first input (``[N, 3, S, S]`` or ``[N, S, S, 3]``). The
normalisation comes from the model's metadata (``input_mean`` / ``input_std``) or, failing that, from insightface's
rule in ``model_zoo/arcface_onnx.py``: a graph whose first nodes include ``Sub`` and ``Mul`` (by name, as in
an MXNet export, or by operator)
normalises itself (mean 0, std 1); any other takes ``(pixel - 127.5) / 127.5``. The spec's options override both.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recognition.embedders.chips import ChipEmbedder, file_fingerprint
from recognition.embedders.spec import ModelSpec, SpecError

log = logging.getLogger(__name__)

ARCFACE_NORM = (127.5, 127.5)  # insightface's (mean, std) for models that do not normalise themselves


def normalisation_of(path: Path, metadata: dict[str, str]) -> tuple[float, float]:
    """``(mean, std)`` from the metadata, else insightface's first-nodes rule (needs the ``onnx`` package)."""
    if "input_mean" in metadata and "input_std" in metadata:
        return float(metadata["input_mean"]), float(metadata["input_std"])
    try:
        import onnx
    except ImportError:
        log.warning("onnx is not installed: %s assumed to take (pixel - 127.5) / 127.5", path)
        return ARCFACE_NORM
    nodes = onnx.load(str(path), load_external_data=False).graph.node[:8]
    names = [node.name.lstrip("/") for node in nodes] + [node.op_type for node in nodes]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else ARCFACE_NORM


def _providers(device) -> list[str]:
    import onnxruntime as ort

    wanted = ["CUDAExecutionProvider"] if str(device).startswith("cuda") else []
    available = set(ort.get_available_providers())
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OnnxEmbedder(ChipEmbedder):
    """The first output of an ONNX model, for arcface-template chips."""

    def __init__(self, spec: ModelSpec, path: Path, device):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise SpecError("onnx: onnxruntime is not installed; `pip install onnxruntime`") from exc
        try:
            self.session = ort.InferenceSession(str(path), providers=_providers(device))
        except Exception as exc:  # onnxruntime raises its own exception types for a file it cannot load
            raise SpecError(f"{path} is not an ONNX model onnxruntime can load ({exc})") from exc
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        shape = list(first.shape)
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise SpecError(f"{path}: the first input has shape {shape}; expected [N, 3, S, S] or [N, S, S, 3]")
        self.channels_last = shape[3] == 3 and shape[1] != 3
        side = shape[1] if self.channels_last else shape[2]
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        mean, std = normalisation_of(path, metadata)
        size = side if isinstance(side, int) else 112
        if spec.inputs.size is not None and isinstance(side, int) and spec.inputs.size != side:
            raise SpecError(f"{path} takes {side} px inputs, the spec asks for size={spec.inputs.size}")
        self.inputs = spec.inputs.filled(size, mean, std)
        self.fingerprint = file_fingerprint(path, spec, self.inputs)
        self.config = self.describe(spec, path)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.channels_last:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        step = self.fixed_batch or len(x)
        outputs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            padded = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self.session.run(None, {self.input_name: padded})[0][: len(chunk)])
        return np.concatenate(outputs).reshape(len(x), -1)

"""Recognisers we do not train, for ``verify-lfw`` and so for the context-robustness test: ONNX, TorchScript and
facenet-pytorch models (:mod:`recognition.embedders.spec` for the ``--model`` syntax).
"""

from __future__ import annotations

from pathlib import Path

from recognition.embedders.spec import ModelSpec, SpecError, check_source, is_model_spec, parse_model_spec

__all__ = ["ModelSpec", "SpecError", "is_model_spec", "load_embedder", "parse_model_spec"]


def load_embedder(spec: str | Path, device):
    """The embedder of any ``verify-lfw --model`` value: a kind spec, ``dlib``, or a checkpoint / run folder.

    Raises:
        FileNotFoundError: the model file is missing.
        SpecError: a malformed spec or a file the kind cannot read.
    """
    if not is_model_spec(str(spec)):
        from recognition.features import load_embedder as load_ours

        return load_ours(spec, device)
    parsed = parse_model_spec(str(spec))
    path = check_source(parsed)
    if parsed.kind == "onnx":
        from recognition.embedders.onnx_model import OnnxEmbedder

        return OnnxEmbedder(parsed, path, device)
    from recognition.embedders.torch_models import FacenetEmbedder, TorchScriptEmbedder

    kind = FacenetEmbedder if parsed.kind == "facenet" else TorchScriptEmbedder
    return kind(parsed, path, device)

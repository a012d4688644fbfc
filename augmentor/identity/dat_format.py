"""Reader for dlib's binary ``serialize()`` format, as used by its DNN model files (``*.dat``).

This module only knows the handful of dlib types that appear in ``dlib_face_recognition_resnet_model_v1.dat``; it
parses the nested ``add_loss_layer`` / ``add_layer`` / ``add_tag_layer`` / ``add_skip_layer`` structure into a flat
list of layers ordered from the input to the output. It is private: use :func:`augmentor.identity.network.read_dlib_resnet`.

Format notes (dlib/serialize.h, dlib/dnn/core.h, dlib/dnn/layers.h, dlib/cuda/tensor.h, checked on the real file):

* integer: one control byte (bit 7 = sign, low nibble = byte count) followed by that many little-endian bytes;
* float/double: two integers, mantissa and base-2 exponent;
* string: integer length then raw bytes; bool: the ASCII character ``'1'`` or ``'0'``;
* tensor: version 2, four integer dims ``(num_samples, k, nr, nc)`` then raw little-endian float32 values;
* alias_tensor: version 1 then four integer dims (a view into a layer's ``params`` tensor, no data).
* ``add_loss_layer``: version 1, loss details, subnetwork. ``add_layer``: version 2, subnetwork, layer details,
  three bools, then three (empty) tensors ``x_grad, cached_output, params_grad``; the innermost ``add_layer`` (the
  one over the input layer) has version 3, the input layer in place of the subnetwork, and a trailing
  ``sample_expansion_factor`` integer. Tag and skip layers are version 1 followed by their subnetwork.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["DlibLayer", "parse_dlib_net"]

# Nesting depth guard: the face ResNet is ~130 layers deep; anything far beyond is a corrupt file.
_MAX_DEPTH = 2000


@dataclasses.dataclass
class DlibLayer:
    """One serialized dlib layer.

    Attributes:
        kind: ``"input"``, ``"con"``, ``"affine"``, ``"relu"``, ``"max_pool"``, ``"avg_pool"``, ``"add_prev"``,
            ``"fc"``, ``"tag"`` (a tag or skip layer; the file does not tell them apart) or ``"loss"``.
        name: The serialized type string, e.g. ``"con_4"`` (empty for tags).
        params: The layer's flat float32 ``params`` tensor, or None.
        info: Layer hyper-parameters (kernel size, strides, paddings, input means, ...).
    """

    kind: str
    name: str = ""
    params: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class _Reader:
    """Sequential reader over the bytes of a dlib file; every read raises ValueError when the data runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if n < 0:
            raise ValueError(f"corrupt dlib file: negative size {n} at offset {self.pos}")
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated dlib file: needed {n} bytes at offset {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size > 8 or ctrl & 0x70:
            raise ValueError(f"corrupt dlib integer header 0x{ctrl:02x} at offset {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        char = bytes(self._take(1))
        if char not in (b"0", b"1"):
            raise ValueError(f"corrupt dlib bool {char!r} at offset {self.pos - 1}")
        return char == b"1"

    def str(self) -> str:
        length = self.int()
        if not 0 <= length <= 256:
            raise ValueError(f"corrupt dlib string length {length} at offset {self.pos}")
        try:
            return bytes(self._take(length)).decode("ascii")
        except UnicodeDecodeError as err:
            raise ValueError(f"corrupt dlib string at offset {self.pos - length}") from err

    def version(self, *expected: int) -> int:
        start = self.pos
        version = self.int()
        if version not in expected:
            raise ValueError(f"unexpected dlib version {version} at offset {start} (expected one of {expected})")
        return version

    def dims(self) -> tuple[int, int, int, int]:
        dims = tuple(self.int() for _ in range(4))
        if any(d < 0 for d in dims):
            raise ValueError(f"negative tensor dimension {dims} before offset {self.pos}")
        return dims  # type: ignore[return-value]

    def tensor(self) -> np.ndarray:
        """A dlib ``tensor``: returns its values as a float32 array of shape ``(num_samples, k, nr, nc)``."""
        self.version(2)
        dims = self.dims()
        count = int(np.prod(dims, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.version(1)
        return self.dims()


def _read_details(r: _Reader) -> DlibLayer:
    """Read one computational layer's ``details`` object (it starts with its type-name string)."""
    start = r.pos
    name = r.str()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        info = {key: r.int() for key in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        info["filters_shape"] = r.alias_tensor()  # (num_filters, k, nr, nc)
        info["biases_shape"] = r.alias_tensor()  # (1, num_filters, 1, 1)
        for _ in range(4):  # learning-rate / weight-decay multipliers
            r.float()
        return DlibLayer("con", name, params, info)
    if name in ("affine_", "affine_2"):
        params = r.tensor().reshape(-1)  # gamma then beta
        info = {"gamma_shape": r.alias_tensor(), "beta_shape": r.alias_tensor(), "mode": r.int()}
        return DlibLayer("affine", name, params, info)
    if name in ("max_pool_2", "avg_pool_2"):
        info = {key: r.int() for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        return DlibLayer(name[:-2], name, None, info)
    if name in ("relu_", "add_prev_"):
        return DlibLayer(name[:-1], name, None, {})
    if name == "fc_2":
        info: dict[str, Any] = {"num_outputs": r.int(), "num_inputs": r.int()}
        params = r.tensor()  # (num_inputs [+1 bias row], num_outputs, 1, 1)
        info["params_shape"] = params.shape
        info["weights_shape"] = r.alias_tensor()
        info["biases_shape"] = r.alias_tensor()
        info["bias_mode"] = r.int()  # 0: has bias, 1: no bias
        for _ in range(4):
            r.float()
        return DlibLayer("fc", name, params.reshape(-1), info)
    raise ValueError(f"unsupported dlib layer type {name!r} at offset {start}")


def _read_input(r: _Reader) -> DlibLayer:
    start = r.pos
    name = r.str()
    if name != "input_rgb_image_sized":
        raise ValueError(f"unsupported dlib input layer {name!r} at offset {start}")
    mean = [r.float() for _ in range(3)]  # avg_red, avg_green, avg_blue
    nr, nc = r.int(), r.int()
    return DlibLayer("input", name, None, {"mean_rgb": mean, "nr": nr, "nc": nc})


def _read_subnet(r: _Reader, out: list[DlibLayer]) -> None:
    """Read a (sub)network, appending its layers to ``out`` input-first. Iterative to avoid deep recursion."""
    # dlib writes the outermost layer's header first and its own details only after the whole subnetwork, so
    # walk down collecting the wrappers, then unwind them in reverse (input-to-output) order.
    pending: list[int] = []
    while True:
        if len(pending) > _MAX_DEPTH:
            raise ValueError("dlib network nesting is implausibly deep; the file is corrupt")
        version = r.version(1, 2, 3)
        if version == 3:
            out.append(_read_input(r))
            break
        pending.append(version)
    for version in [3, *reversed(pending)]:
        if version == 1:  # add_tag_layer / add_skip_layer: nothing after the subnetwork
            out.append(DlibLayer("tag"))
            continue
        out.append(_read_details(r))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_..._disabled
            r.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad / grad_final (empty in saved models)
            r.tensor()
        if version == 3:
            r.int()  # _sample_expansion_factor


def parse_dlib_net(data: bytes) -> list[DlibLayer]:
    """Parse a serialized dlib DNN (``add_loss_layer`` over ``add_layer`` s) into layers, input first.

    Args:
        data: The whole file content.

    Returns:
        The layers from the input layer to the loss layer (inclusive).

    Raises:
        ValueError: The bytes are truncated, corrupt, or use a layer type this reader does not know.
    """
    r = _Reader(data)
    r.version(1)  # add_loss_layer
    loss_name = r.str()
    if not loss_name.startswith("loss_metric_"):
        raise ValueError(f"unsupported dlib loss layer {loss_name!r}; expected loss_metric_*")
    loss = DlibLayer("loss", loss_name, None, {"margin": r.float(), "distance_threshold": r.float()})
    layers: list[DlibLayer] = []
    _read_subnet(r, layers)
    layers.append(loss)
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} unexpected trailing bytes after the dlib network")
    return layers

"""Pure-torch port of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The network weights are read straight from dlib's binary model file (no dlib call at run time); the forward pass
reproduces ``dlib.face_recognition_model_v1.compute_face_descriptor`` on a 150x150 face chip, and
:func:`face_chip_from_aligned` reproduces ``dlib.get_face_chip`` geometry differentiably. See ``docs/identity.md``.

Example::

    net = DlibResNet.from_dat().eval().requires_grad_(False)
    chips = face_chip_from_aligned(images, landmarks)  # [N, 3, 150, 150], in [0, 1]
    emb = net(chips)                                   # [N, 128]; same face if ||a - b|| < 0.6
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augmentor.errors import InputError
from augmentor.identity.dat_format import DlibLayer, parse_dlib_net
from augmentor.resources import MissingModelFileError, dlib_model_path

__all__ = [
    "DLIB_MATCH_THRESHOLD",
    "FEATURE_NAMES",
    "DlibResNet",
    "face_chip_from_aligned",
    "face_chip_transform",
    "read_dlib_resnet",
]

logger = logging.getLogger(__name__)

DAT_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: dlib's recommended Euclidean distance threshold between descriptors of the same person.
DLIB_MATCH_THRESHOLD = 0.6
#: dlib input_rgb_image_sized means (avg_red, avg_green, avg_blue), also stored in the model file.
DLIB_INPUT_MEAN = (122.782, 117.001, 104.298)
CHIP_SIZE = 150  # side of dlib's face chip, the network's input
#: The feature maps of the face-perceptual loss and distance: 35x35, 17x17 and 8x8 (of a 150 px chip).
PERCEPTUAL_LAYERS = ("level4", "level3", "level2")

# (name, channels, blocks, first block downsamples), input to output.
_LEVELS = (
    ("level4", 32, 3, False),
    ("level3", 64, 4, True),
    ("level2", 128, 3, True),
    ("level1", 256, 3, True),
    ("level0", 256, 1, True),
)
#: Names accepted by :meth:`DlibResNet.features`, in computation order.
FEATURE_NAMES = ("stem", *(lvl[0] for lvl in _LEVELS), "pooled", "embedding")

# dlib's mean face (get_face_chip_details, dlib/image_transforms/interpolation.h) for landmarks 17..67 of the
# iBUG 68-point scheme, in [0, 1] chip coordinates.
# fmt: off
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004, 0.490127,
    0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825,
    0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149, 0.340985,
    0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721, 0.490127, 0.423532, 0.338094, 0.290379,
    0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127, 0.42689,
)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915, 0.106454, 0.203352,
    0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852,
    0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405,
    0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792,
    0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182,
)
# fmt: on
# dlib skips the eyebrows (17..26) and the lower lip (55..59, 65..67) when fitting the similarity transform.
_CHIP_LANDMARKS = tuple(i for i in range(17, 68) if not (i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))


# --------------------------------------------------------------------------------------------------- weights


def _expected_layout() -> list[tuple]:
    """The layer sequence of the face ResNet, input first: ``(kind, state-dict prefix, conv spec)``."""
    seq: list[tuple] = [
        ("input", "", None),
        ("con", "stem.conv", (32, 3, 7, 2, 0)),
        ("affine", "stem.affine", 32),
        ("relu", "", None),
        ("max_pool", "", (3, 2, 0)),
    ]
    in_ch = 32
    for name, ch, blocks, down in _LEVELS:
        for b in range(blocks):
            stride = 2 if down and b == 0 else 1
            pre = f"{name}.{b}"
            seq += [
                ("tag", "", None),
                ("con", f"{pre}.conv1", (ch, in_ch, 3, stride, 0 if stride == 2 else 1)),
                ("affine", f"{pre}.affine1", ch),
                ("relu", "", None),
                ("con", f"{pre}.conv2", (ch, ch, 3, 1, 1)),
                ("affine", f"{pre}.affine2", ch),
            ]
            if stride == 2:
                seq += [("tag", "", None), ("tag", "", None), ("avg_pool", "", (2, 2, 0))]
            seq += [("add_prev", "", None), ("relu", "", None)]
            in_ch = ch
    seq += [("avg_pool", "", (0, 1, 0)), ("fc", "fc", (128, 256)), ("loss", "", None)]
    return seq


def _check(cond: bool, layer: DlibLayer, index: int, what: str) -> None:
    if not cond:
        raise ValueError(f"layer {index} ({layer.name or layer.kind}) does not match the dlib face ResNet: {what}")


def _layers_to_state(layers: list[DlibLayer]) -> dict[str, np.ndarray]:
    layout = _expected_layout()
    if [lay.kind for lay in layers] != [kind for kind, _, _ in layout]:
        raise ValueError(
            f"the file holds a {len(layers)}-layer dlib network that is not dlib_face_recognition_resnet_model_v1 "
            f"(expected {len(layout)} layers: {' '.join(k for k, _, _ in layout[:12])} ...)"
        )
    state: dict[str, np.ndarray] = {}
    for i, (layer, (kind, key, spec)) in enumerate(zip(layers, layout, strict=True)):
        info, params = layer.info, layer.params
        if kind == "input":
            _check((info["nr"], info["nc"]) == (CHIP_SIZE, CHIP_SIZE), layer, i, f"input size {info}")
            state["input_mean"] = np.asarray(info["mean_rgb"], dtype=np.float32)
        elif kind == "con":
            out_ch, in_ch, ksize, stride, pad = spec
            keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
            got = (info["num_filters"], info["filters_shape"][1], *(info[k] for k in keys))
            _check(got == (out_ch, in_ch, ksize, ksize, stride, stride, pad, pad), layer, i, f"conv spec {got}")
            n_w = out_ch * in_ch * ksize * ksize
            _check(params is not None and params.size == n_w + out_ch, layer, i, "parameter count")
            state[f"{key}.weight"] = params[:n_w].reshape(out_ch, in_ch, ksize, ksize)  # [out, in, kh, kw]
            state[f"{key}.bias"] = params[n_w:]
        elif kind == "affine":
            _check(params is not None and params.size == 2 * spec and info["mode"] == 0, layer, i, "affine size")
            state[f"{key}.weight"], state[f"{key}.bias"] = params[:spec], params[spec:]  # gamma, beta
        elif kind in ("max_pool", "avg_pool"):
            ksize, stride, pad = spec
            got = (info["nr"], info["nc"], info["stride_y"], info["stride_x"], info["padding_y"], info["padding_x"])
            _check(got == (ksize, ksize, stride, stride, pad, pad), layer, i, f"pool spec {got}")
        elif kind == "fc":
            out_f, in_f = spec
            _check(
                (info["num_outputs"], info["num_inputs"], info["bias_mode"]) == (out_f, in_f, 1), layer, i, "fc spec"
            )
            _check(params is not None and params.size == in_f * out_f, layer, i, "fc parameter count")
            state[f"{key}.weight"] = np.ascontiguousarray(params.reshape(in_f, out_f).T)  # dlib stores [in, out]
    return state


def read_dlib_resnet(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` into float32 arrays keyed like :class:`DlibResNet`.

    Args:
        path: The ``.dat`` file; None uses the copy shipped by the ``face-recognition-models`` package.

    Returns:
        ``{state_dict key: array}``: 29 convs (``*.weight`` ``[out, in, kh, kw]``, ``*.bias`` ``[out]``), 29 affine
        layers (``*.weight`` = gamma, ``*.bias`` = beta, ``[C]``), ``fc.weight`` ``[128, 256]`` and
        ``input_mean`` ``[3]`` (RGB, 0..255 scale).

    Raises:
        MissingModelFileError: The file does not exist.
        InputError: The file is truncated, corrupt, or not this network.
    """
    path = dlib_model_path(DAT_FILE) if path is None else Path(path)
    if not path.is_file():
        raise MissingModelFileError(
            f"{path} does not exist. Pass the path of {DAT_FILE} (it ships with `pip install "
            "face-recognition-models`; or download it from http://dlib.net/files/ and bunzip2 it), or pass "
            "path=None to use the installed face-recognition-models copy."
        )
    try:
        layers = parse_dlib_net(path.read_bytes())
        return _layers_to_state(layers)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from err


# --------------------------------------------------------------------------------------------------- network


class _Affine(nn.Module):
    """dlib ``affine`` layer (a frozen batch norm): ``y = gamma * x + beta`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class _Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine = _Affine(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.affine(self.conv(x)))  # [N, 32, 72, 72]
        return F.max_pool2d(x, 3, stride=2)  # [N, 32, 35, 35]


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: the output has the larger size in each dimension; the smaller input is zero-padded at the
    end (channels) and bottom/right (space)."""
    size = [max(sa, sb) for sa, sb in zip(a.shape[1:], b.shape[1:], strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        if (c, h, w) == tuple(size):
            return t
        return F.pad(t, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))

    return pad(a) + pad(b)


class _ResBlock(nn.Module):
    """``relu(add_prev(block(x), shortcut(x)))`` with ``block = affine∘con∘relu∘affine∘con``; the downsampling
    variant strides the first conv (no padding) and uses a 2x2 average pool as the shortcut."""

    def __init__(self, in_ch: int, out_ch: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = _Affine(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1)
        self.affine2 = _Affine(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, stride=2) if self.down else x
        return F.relu(_add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's 29-conv face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``), 5,614,592 parameters.

    The plain constructor builds the architecture with default (random conv, identity affine) weights; use
    :meth:`from_dat` for the pretrained model. Input: ``[N, 3, 150, 150]`` RGB in ``[0, 1]``, a dlib face chip
    (``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` or :func:`face_chip_from_aligned`). Output:
    ``[N, 128]`` descriptors: the fc output, not L2-normalised (as dlib's; norms are ~1.3-1.6 on LFW faces).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(DLIB_INPUT_MEAN, dtype=torch.float32))  # [3], 0..255
        self.stem = _Stem()
        in_ch = 32
        for name, ch, blocks, down in _LEVELS:
            self.add_module(
                name, nn.Sequential(*[_ResBlock(in_ch if b == 0 else ch, ch, down and b == 0) for b in range(blocks)])
            )
            in_ch = ch
        self.fc = nn.Linear(256, 128, bias=False)

    @classmethod
    def from_dat(cls, path: str | Path | None = None) -> DlibResNet:
        """Build the network with the weights of a dlib ``.dat`` file (None: the face-recognition-models copy).

        Raises:
            MissingModelFileError: The file does not exist.
            InputError: The file is malformed or holds another network.
        """
        state = read_dlib_resnet(path)
        net = cls()
        net.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()})
        logger.debug("loaded dlib face ResNet from %s", path or DAT_FILE)
        return net

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> DlibResNet:
        """Pretrained weights from dlib's ``.dat`` (None: the face-recognition-models copy) or from the
        ``identity.safetensors`` of an ``augmentor pack`` (stored in fp16, loaded as float32; no dlib files needed).

        Raises:
            MissingModelFileError: The file does not exist.
            InputError: The file is malformed or holds another network.
        """
        if path is None or Path(path).suffix != ".safetensors":
            return cls.from_dat(path)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise MissingModelFileError(f"{path} does not exist; `augmentor pack` writes it next to faces.parquet")
        net = cls()
        try:
            net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        except (RuntimeError, SafetensorError) as err:
            raise InputError(f"{path} does not hold the dlib face ResNet: {err}") from err
        logger.debug("loaded dlib face ResNet from %s", path)
        return net

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """dlib input_rgb_image normalisation: ``(pixel - mean) / 256`` with pixels on the 0..255 scale."""
        return (x * 255.0 - self.input_mean.to(x.dtype)[:, None, None]) / 256.0

    def features(self, x: torch.Tensor, layers: tuple[str, ...] | list[str] | None = None) -> dict[str, torch.Tensor]:
        """Intermediate activations, e.g. for a face-perceptual loss.

        Args:
            x: ``[N, 3, 150, 150]`` RGB in ``[0, 1]``.
            layers: Subset of :data:`FEATURE_NAMES` (None: all). Computation stops after the last one asked for.

        Returns:
            ``{name: tensor}``: ``stem`` [N, 32, 35, 35], ``level4`` [N, 32, 35, 35], ``level3`` [N, 64, 17, 17],
            ``level2`` [N, 128, 8, 8], ``level1`` [N, 256, 4, 4], ``level0`` [N, 256, 2, 2], ``pooled`` [N, 256],
            ``embedding`` [N, 128].
        """
        wanted = set(FEATURE_NAMES if layers is None else layers)
        unknown = wanted - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"unknown feature names {sorted(unknown)}; choose from {FEATURE_NAMES}")
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected [N, 3, {CHIP_SIZE}, {CHIP_SIZE}] face chips in [0, 1], got {tuple(x.shape)}")
        out: dict[str, torch.Tensor] = {}
        h = self.normalize(x)  # [N, 3, 150, 150]
        for name in FEATURE_NAMES:
            if name == "pooled":
                h = h.mean(dim=(2, 3))  # [N, 256]
            elif name == "embedding":
                h = self.fc(h)  # [N, 128]
            else:
                h = getattr(self, name)(h)
            if name in wanted:
                out[name] = h
                if len(out) == len(wanted):
                    break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 150, 150]`` RGB chips in ``[0, 1]`` -> ``[N, 128]`` dlib face descriptors."""
        return self.features(x, ("embedding",))["embedding"]


# --------------------------------------------------------------------------------------------------- face chips


def face_chip_transform(landmarks: torch.Tensor, size: int = CHIP_SIZE, padding: float = 0.25) -> torch.Tensor:
    """Affine map from chip pixels to image pixels, as ``dlib.get_face_chip_details(shape, size, padding)``.

    dlib fits a similarity transform (Umeyama, no reflection) from its mean-face template to landmarks 27..54 and
    60..64, turns it into a rotated rectangle (``chip_details``) and then maps chip corners ``(0, 0)``,
    ``(size-1, 0)``, ``(0, size-1)`` onto that rectangle's corners; this reproduces the last mapping.

    Args:
        landmarks: ``[N, 68, 2]`` or ``[68, 2]`` iBUG-68 points, ``(x, y)`` in image pixels (pixel centres at
            integer coordinates, as dlib).
        size: Chip side in pixels.
        padding: dlib's padding (fraction of the template's extent added on each side).

    Returns:
        ``[N, 2, 3]`` float64 matrices ``M`` with ``image_xy = M @ (chip_x, chip_y, 1)``.
    """
    pts = torch.as_tensor(landmarks).to(torch.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or tuple(pts.shape[1:]) != (68, 2):
        raise ValueError(f"expected [N, 68, 2] or [68, 2] landmarks, got {tuple(pts.shape)}")
    idx = [i - 17 for i in _CHIP_LANDMARKS]
    template = torch.tensor([[_MEAN_FACE_X[i], _MEAN_FACE_Y[i]] for i in idx], dtype=torch.float64, device=pts.device)
    src = (padding + template) / (2 * padding + 1) * size  # [P, 2] chip coordinates
    dst = pts[:, list(_CHIP_LANDMARKS)]  # [N, P, 2] image coordinates
    # Least-squares similarity dst ~ [[a, -b], [b, a]] @ src + t (same minimiser as dlib's Umeyama fit).
    src_c = src - src.mean(0)
    dst_mean = dst.mean(1)  # [N, 2]
    dst_c = dst - dst_mean[:, None]
    denom = (src_c**2).sum()
    a = (dst_c[..., 0] * src_c[:, 0] + dst_c[..., 1] * src_c[:, 1]).sum(1) / denom  # [N]
    b = (dst_c[..., 1] * src_c[:, 0] - dst_c[..., 0] * src_c[:, 1]).sum(1) / denom
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # [N, 2, 2], scale * rotation
    t = dst_mean - (rot @ src.mean(0)[:, None])[..., 0]  # [N, 2]
    # chip_details: rect = centered_drect(tform(size/2, size/2), size*scale, size*scale), angle = atan2(b, a);
    # centered_drect(p, w, h) puts the corners at p -+ (w - 1) / 2, and chip pixels 0 .. size-1 span them.
    half = torch.full((2, 1), size / 2.0, dtype=torch.float64, device=pts.device)
    center = (rot @ half)[..., 0] + t  # [N, 2]
    scale = torch.sqrt(a**2 + b**2)  # [N]
    unit = rot / scale[:, None, None]  # [N, 2, 2] rotation by `angle`
    step = (size * scale - 1) / max(size - 1, 1)  # [N] image pixels per chip pixel
    top_left = center - (unit @ torch.ones_like(half))[..., 0] * ((size * scale - 1) / 2)[:, None]
    return torch.cat([unit * step[:, None, None], top_left[..., None]], dim=-1)  # [N, 2, 3]


def face_chip_from_aligned(
    images: torch.Tensor, landmarks: torch.Tensor, size: int = CHIP_SIZE, padding: float = 0.25
) -> torch.Tensor:
    """Differentiable ``dlib.get_face_chip(img, shape, size, padding)`` for a batch of images.

    Args:
        images: ``[N, C, H, W]`` float images (any value range; the output keeps it), e.g. 128x128 aligned crops.
        landmarks: ``[N, 68, 2]`` or ``[68, 2]`` (broadcast) 68-point landmarks ``(x, y)`` in pixels of ``images``.
        size: Output chip side.
        padding: dlib padding (0.25 for the face-recognition ResNet).

    Returns:
        ``[N, C, size, size]`` chips, bilinearly sampled (``grid_sample``) so gradients reach ``images``. Equal to
        dlib's chip before its truncation to uint8 (dlib = floor(ours)), except (a) where the sampling footprint
        leaves the image: dlib writes 0, this blends with zeros over the one-pixel border; (b) when the face region
        is over ~2x the chip side, where dlib samples a downscaled image pyramid and this does not anti-alias.
    """
    if images.ndim != 4:
        raise ValueError(f"expected [N, C, H, W] images, got {tuple(images.shape)}")
    n, _, height, width = images.shape
    mats = face_chip_transform(torch.as_tensor(landmarks, device=images.device), size, padding)  # [M, 2, 3]
    if mats.shape[0] == 1 and n != 1:
        mats = mats.expand(n, 2, 3)
    if mats.shape[0] != n:
        raise ValueError(f"{mats.shape[0]} landmark sets for {n} images")
    coords = torch.arange(size, dtype=torch.float64, device=images.device)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    chip_xy1 = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)  # [1, S*S, 3]
    img_xy = chip_xy1 @ mats.transpose(1, 2)  # [N, S*S, 2] image pixels
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=torch.float64, device=images.device)
    grid = (img_xy * scale - 1.0).reshape(n, size, size, 2).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

"""Decode an image file into an RGB uint8 array, turning every bad-input case into a :class:`FaceError`."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from augmentor.faces.result import FaceError

MIN_SIDE = 32  # smaller images cannot hold a detectable face
MAX_PIXELS = 50_000_000  # decompression-bomb guard (50 MP)

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode we can handle to ``[H, W, 3]`` uint8 RGB."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img)
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or mode != "I" else 255.0
        grey = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img)
        grey = np.clip(np.round(arr * (255.0 if arr.max(initial=0) <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode in ("L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "La"):
        return np.asarray(img.convert("RGB"))
    raise FaceError("unsupported_mode", f"image mode {mode!r} cannot be converted to RGB")


def load_image(source: str | Path | bytes) -> np.ndarray:
    """Read an image file (or its bytes) as ``[H, W, 3]`` uint8 RGB, upright per its EXIF orientation.

    Greyscale, palette, CMYK, RGBA (composited on black) and 16-bit images are converted.

    Raises:
        FaceError: ``unreadable`` (missing / I/O error), ``not_an_image``, ``truncated``, ``too_large``
            (over :data:`MAX_PIXELS`, a decompression bomb), ``too_small`` (a side under :data:`MIN_SIDE`)
            or ``unsupported_mode``.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise FaceError("unreadable", f"{name}: {exc.strerror or exc}") from exc
    with fp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fp)  # reads the header only; the size is checked before decoding
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise FaceError("too_large", f"{width}x{height} = {width * height / 1e6:.1f} MP > 50 MP")
                if min(width, height) < MIN_SIDE:
                    raise FaceError("too_small", f"{width}x{height}, a side is under {MIN_SIDE} px")
                img.load()
                img = ImageOps.exif_transpose(img)
        except FaceError:
            raise
        except UnidentifiedImageError as exc:
            raise FaceError("not_an_image", f"{name}: not a recognised image format") from exc
        except Image.DecompressionBombError as exc:
            raise FaceError("too_large", str(exc)) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            text = str(exc)
            code = "truncated" if "truncat" in text.lower() or isinstance(exc, EOFError) else "unreadable"
            raise FaceError(code, f"{name}: {text}") from exc
        return np.ascontiguousarray(_to_rgb(img))

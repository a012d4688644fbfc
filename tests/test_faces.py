"""Masking on real faces and every bad-input kind."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from augmentor.faces import FaceError, MaskingConfig, Status, Template, load_image
from augmentor.faces.align import similarity_from_eyes, transform_points
from augmentor.faces.landmarks import eye_centres


def test_masking_real_faces(masker, lfw_images):
    template = masker.config.template
    for path in lfw_images:
        face = masker(path)
        assert face.status is Status.OK, (path.name, face.reason)
        assert face.aligned.shape == (128, 128, 3) and face.aligned.dtype == np.uint8
        assert face.mask.shape == (128, 128) and set(np.unique(face.mask)) == {0, 1}
        # The face hull is non-empty, well inside the frame, and a plausible share of it.
        assert 0.08 < face.mask.mean() < 0.4
        rows, cols = np.nonzero(face.mask)
        assert rows.min() > 0 and cols.min() > 0 and rows.max() < 127 and cols.max() < 127
        assert np.all((face.landmarks >= 0) & (face.landmarks < 128))
        left, right = eye_centres(face.landmarks)
        np.testing.assert_allclose(left, template.left_eye, atol=0.01)
        np.testing.assert_allclose(right, template.right_eye, atol=0.01)
        # Face pixels are the aligned pixels, everything else is 0.
        masked = face.masked
        inside = face.mask.astype(bool)
        assert np.array_equal(masked[inside], face.aligned[inside])
        assert not masked[~inside].any()


def test_eyes_land_on_template_when_redetected(masker, lfw_images):
    """Landmarks found afresh on the aligned crop put the eyes within 2 px of the template."""
    template = masker.config.template
    for path in lfw_images:
        face = masker(path)
        left, top, right, bottom = face.box
        corners = transform_points(face.transform, np.array([[left, top], [right, bottom]], float))
        box = tuple(round(float(v)) for v in corners.reshape(-1))
        points = masker.landmarks(face.aligned, box)
        found_left, found_right = eye_centres(points)
        assert np.linalg.norm(found_left - template.left_eye) < 2.0, path.name
        assert np.linalg.norm(found_right - template.right_eye) < 2.0, path.name


def test_similarity_transform_is_exact():
    template = Template()
    matrix = similarity_from_eyes(np.array([100.0, 120.0]), np.array([150.0, 100.0]), template)
    out = transform_points(matrix, np.array([[100.0, 120.0], [150.0, 100.0]]))
    np.testing.assert_allclose(out, [template.left_eye, template.right_eye], atol=1e-9)
    linear = matrix[:, :2]
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) * np.linalg.det(linear), atol=1e-12)  # no shear
    with pytest.raises(ValueError, match="coincide"):
        similarity_from_eyes(np.array([1.0, 1.0]), np.array([1.0, 1.0]), template)


# --- bad inputs ---------------------------------------------------------------------------------------------------


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a 1-row payload: enough to test the pre-decode size check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def face_jpeg(lfw_images) -> bytes:
    return lfw_images[0].read_bytes()


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda jpg, tmp: tmp / "missing.jpg", "unreadable"),
        (lambda jpg, tmp: b"", "not_an_image"),
        (lambda jpg, tmp: b"this is a text file, not a picture\n" * 20, "not_an_image"),
        (lambda jpg, tmp: jpg[: len(jpg) // 2], "truncated"),
        (lambda jpg, tmp: _encode(Image.new("RGB", (20, 20)), "PNG"), "too_small"),
        (lambda jpg, tmp: _png_with_size(8000, 7000), "too_large"),
        (lambda jpg, tmp: _png_with_size(20000, 20000), "too_large"),
    ],
    ids=["missing", "empty", "text", "truncated", "tiny", "bomb-56MP", "bomb-400MP"],
)
def test_bad_files_yield_error_status(masker, face_jpeg, tmp_path, make, code):
    source = make(face_jpeg, tmp_path)
    with pytest.raises(FaceError) as info:
        load_image(source)
    assert info.value.code == code
    result = masker(source)
    assert result.status is Status.ERROR
    assert result.reason.startswith(f"{code}: ")
    assert result.aligned is None


@pytest.mark.parametrize(
    "image",
    [np.full((200, 200, 3), 128, np.uint8), np.random.default_rng(0).integers(0, 256, (240, 180, 3), dtype=np.uint8)],
    ids=["flat", "noise"],
)
def test_no_face(masker, image):
    result = masker(_encode(Image.fromarray(image), "PNG"))
    assert result.status is Status.NO_FACE and result.reason.startswith("no_face")
    with pytest.raises(ValueError, match="no masked image"):
        _ = result.masked


def _sixteen_bit(img: Image.Image) -> bytes:
    grey = np.asarray(img.convert("L")).astype(np.uint16) * 257
    return _encode(Image.fromarray(grey), "PNG")


@pytest.mark.parametrize(
    "convert, mode",
    [
        (lambda img: _encode(img.convert("L"), "JPEG"), "L"),
        (lambda img: _encode(img.convert("CMYK"), "JPEG"), "CMYK"),
        (lambda img: _encode(img.convert("RGBA"), "PNG"), "RGBA"),
        (lambda img: _encode(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"), "P"),
        (_sixteen_bit, "I;16"),
    ],
    ids=["greyscale", "cmyk", "rgba", "palette", "16bit"],
)
def test_convertible_modes_are_masked(masker, face_jpeg, convert, mode):
    data = convert(Image.open(io.BytesIO(face_jpeg)))
    assert Image.open(io.BytesIO(data)).mode.startswith(mode[:1])
    rgb = load_image(data)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.mean() > 20  # not a blank conversion
    result = masker(data)
    assert result.status is Status.OK, result.reason


def test_exif_rotation_is_applied(masker, face_jpeg):
    upright = Image.open(io.BytesIO(face_jpeg))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the sideways pixels a camera would store
    data = _encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    loaded = load_image(data)
    assert loaded.shape == np.asarray(upright).shape
    assert np.abs(loaded.astype(int) - np.asarray(upright).astype(int)).mean() < 4
    reference, result = masker(face_jpeg), masker(data)
    assert result.status is Status.OK
    assert np.abs(result.aligned.astype(int) - reference.aligned.astype(int)).mean() < 6


def test_array_input_and_bad_array(masker, face_jpeg):
    assert masker(load_image(face_jpeg)).status is Status.OK
    bad = masker(np.zeros((64, 64), np.float32))
    assert bad.status is Status.ERROR and bad.reason.startswith("unsupported_mode")


def test_template_scales():
    small = Template().scaled(64)
    assert small.size == 64 and small.left_eye == (25.5, 28.0) and small.right_eye == (38.5, 28.0)
    assert MaskingConfig().template == Template()

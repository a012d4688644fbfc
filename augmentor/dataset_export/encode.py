"""Every exported image is the stored crop (or copy) decoded, resized to ``--size`` and re-encoded as JPEG.

OpenCV works in BGR end to end here (decode, resize, encode), so no channel is swapped; it releases the GIL, so a
thread pool encodes in parallel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augmentor.dataset_export.sources import Sample, SourceError


def resize_square(image: np.ndarray, size: int | None) -> np.ndarray:
    """``image`` at ``size x size`` (area filter when shrinking); unchanged when ``size`` is None or already so."""
    import cv2

    if size is None or image.shape[:2] == (size, size):
        return image
    shrink = image.shape[0] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_jpeg(sample: Sample, size: int | None, quality: int) -> tuple[bytes, int]:
    """The sample's JPEG bytes at ``size`` px and ``quality``, and the side it has.

    Raises:
        SourceError: the stored bytes or the file are not an image.
    """
    import cv2

    data = sample.encoded if sample.encoded is not None else Path(sample.path).read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # [H, W, 3] BGR
    if image is None:
        raise SourceError(f"{sample.path or sample.image_id}: not a decodable image")
    image = resize_square(image, size)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SourceError(f"{sample.path or sample.image_id}: JPEG encoding failed")
    return buffer.tobytes(), image.shape[0]

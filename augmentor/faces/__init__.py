"""Face masking: detect, find 68 landmarks, align on the eyes, crop 128x128 and mask outside the face hull."""

from augmentor.faces.align import Template
from augmentor.faces.image_io import load_image
from augmentor.faces.mask import RESOLUTIONS, PyramidLevel, hull_mask, pyramid
from augmentor.faces.masker import FaceMasker, MaskingConfig
from augmentor.faces.result import FaceError, MaskedFace, Status

__all__ = [
    "RESOLUTIONS",
    "FaceError",
    "FaceMasker",
    "MaskedFace",
    "MaskingConfig",
    "PyramidLevel",
    "Status",
    "Template",
    "hull_mask",
    "load_image",
    "pyramid",
]

"""Face masking: detect, find 68 landmarks, align on the eyes, crop 128x128 and mask outside the face hull."""

from augmentor.faces.align import Template
from augmentor.faces.image_io import load_image
from augmentor.faces.mask import hull_mask
from augmentor.faces.masker import FaceMasker, MaskingConfig
from augmentor.faces.result import FaceError, MaskedFace, Status

__all__ = [
    "FaceError",
    "FaceMasker",
    "MaskedFace",
    "MaskingConfig",
    "Status",
    "Template",
    "hull_mask",
    "load_image",
]

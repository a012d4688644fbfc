"""The cascaded GAN: generator blocks, discriminators and the cascade that chains them."""

from augmentor.models.cascade import Cascade, Discriminators, image_pyramid, input_pyramid, paste_face
from augmentor.models.config import DEFAULT_WIDTHS, PAPER_WIDTHS, RESOLUTIONS, CascadeConfig
from augmentor.models.discriminator import Discriminator
from augmentor.models.generator import GeneratorBlock

__all__ = [
    "DEFAULT_WIDTHS",
    "PAPER_WIDTHS",
    "RESOLUTIONS",
    "Cascade",
    "CascadeConfig",
    "Discriminator",
    "Discriminators",
    "GeneratorBlock",
    "image_pyramid",
    "input_pyramid",
    "paste_face",
]

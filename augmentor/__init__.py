"""augmentor: hallucinate context and background pixels around a masked face."""

__version__ = "0.1.0"

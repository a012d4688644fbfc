"""Dataset adapters and bulk jobs built on top of :mod:`augmentor`."""

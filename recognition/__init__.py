"""Face-recognition fine-tuning and LFW verification built on top of :mod:`augmentor`."""

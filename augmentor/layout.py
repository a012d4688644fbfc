"""Names and sizes that writers and readers share, owned here so that torch-free readers (the manifest's
``model_id``, the CLIs' argument checks, the pipeline's stages) and the writers (:mod:`augmentor.training.checkpoints`,
:mod:`augmentor.faces.align`) use one definition. Imports nothing."""

from __future__ import annotations

MODEL_FILE = "model.safetensors"  # the weights (or, sharded, model-00001-of-0000N.safetensors + INDEX_FILE)
INDEX_FILE = "model.safetensors.index.json"  # sharded weights: {"metadata": ..., "weight_map": {tensor: file}}
CONFIG_FILE = "config.json"  # format, version, architecture and training metadata; rebuilds the model
SHARD_GLOB = "model-*-of-*.safetensors"  # the files of sharded weights
CROP_SIZE = 128  # side of the aligned crop in pixels: what preprocess stores and the cascade's last block outputs

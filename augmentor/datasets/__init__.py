"""Dataset adapters (``casia``, ``lfw``, ``celeba``, ``folder``, ``list``) and path sanitising for output names."""

from augmentor.datasets.adapters import (
    DatasetError,
    as_arrow,
    list_datasets,
    load_dataset,
    load_dataset_arrow,
    register,
)

__all__ = ["DatasetError", "as_arrow", "list_datasets", "load_dataset", "load_dataset_arrow", "register"]

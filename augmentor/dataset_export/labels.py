"""Identities numbered once over every source, and ``labels.tsv``.

The label of an identity is the index of its folder name in sorted order. The folder name is the identity itself
when it is a plain file name (:func:`augmentor.datasets.paths.safe_name`), so for ordinary datasets the labels are
the sorted identities, as ``augmentor run`` numbers them; and torchvision's ``ImageFolder``, which numbers classes by
sorted folder name, gives every image the same label as the other formats.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from augmentor.datasets.paths import hashed_name, safe_name


def folder_names(identities: list[str]) -> dict[str, str]:
    """``identity -> folder``: :func:`safe_name`, hashed where two would meet on a case-blind disk."""
    names = {identity: safe_name(identity) for identity in identities}
    groups: dict[str, list[str]] = defaultdict(list)
    for identity, name in names.items():
        groups[name.lower()].append(identity)
    return {i: hashed_name(i) if len(groups[n.lower()]) > 1 else n for i, n in names.items()}


@dataclass
class Labels:
    """The identities in label order, their folders and their sample counts."""

    identities: list[str]  # label -> identity
    folders: list[str]  # label -> folder name (ImageFolder)
    real: list[int]  # label -> real crops exported
    copies: list[int]  # label -> hallucinated copies exported

    @classmethod
    def number(cls, real: Counter, copies: Counter) -> Labels:
        """Labels for the identities counted in the sources (``identity -> rows``, real and copies)."""
        folders = folder_names(sorted(set(real) | set(copies)))
        order = sorted(folders, key=lambda identity: (folders[identity], identity))
        return cls(order, [folders[i] for i in order], [real[i] for i in order], [copies[i] for i in order])

    def __post_init__(self) -> None:
        self.index = {identity: label for label, identity in enumerate(self.identities)}

    def __len__(self) -> int:
        return len(self.identities)

    @property
    def num_samples(self) -> int:
        return sum(self.real) + sum(self.copies)

    def write(self, path: Path) -> Path:
        """``labels.tsv``: label, identity, folder, real and copy counts, one identity a line."""
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(["label", "identity", "folder", "real", "copies"])
            for label, row in enumerate(zip(self.identities, self.folders, self.real, self.copies, strict=True)):
                writer.writerow([label, *row])
        return path

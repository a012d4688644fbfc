"""Realism of a set against real photos: SWD in both normalisations, seam SWD, and the classifier two-sample test.

- ``swd_<res>``: ProGAN's SWD, each set normalised by its own statistics (per-set; forgives blur).
- ``swdr_<res>``: the same descriptors normalised by the real reference set's statistics (real-referenced).
- ``seam_swd_<res>`` / ``seam_swdr_<res>``: neighbourhoods centred within ``SEAM_EDGE_PX`` px of the face-mask
  edge, at 128 and 64 px, in both normalisations.
- ``c2st_<region>``: balanced test accuracy of a small CNN telling the set from real photos (0.5 = can't).

Every method's neighbourhoods sit at the same positions (common random numbers), so two methods' SWDs differ by
their pixels, not by where the patches fell.
"""

from __future__ import annotations

import numpy as np

from augmentor.evaluation.bands import REGIONS, crop_region
from augmentor.evaluation.c2st import C2STConfig, C2STResult, c2st
from augmentor.evaluation.swd import level_stats, normalise_levels, project_levels, raw_levels, swd_between

SEAM_LEVELS = 2  # seam SWD at the two finest levels (128 and 64 px on the 128 px crop)
SEAM_EDGE_PX = 3  # neighbourhood centres within this many px (of each level) of the face-mask edge
# key prefix -> (seam only, normalised by the real set's statistics)
SWD_VARIANTS = {"swd": (False, False), "swdr": (False, True), "seam_swd": (True, False), "seam_swdr": (True, True)}
SWD_LABELS = {
    "swd": "SWD (per-set normalised, ProGAN)",
    "swdr": "SWD (real-referenced)",
    "seam_swd": "seam SWD (per-set normalised)",
    "seam_swdr": "seam SWD (real-referenced)",
}


class SwdJudge:
    """SWD of image sets against one real reference set, in every variant of :data:`SWD_VARIANTS`.

    Args:
        real: uint8 ``[M, S, S, 3]`` reference photos.
        real_masks: ``[M, S, S]`` their face masks (for the seam variants).
        seed: Seeds the neighbourhood positions (one stream for the reference, one shared by every scored set).
        num_projections: Directions of the point SWD.
        bootstrap_projections: Directions of the per-image projections kept for the bootstrap.
    """

    def __init__(
        self, real: np.ndarray, real_masks: np.ndarray, seed: int, num_projections: int, bootstrap_projections: int
    ):
        streams = np.random.SeedSequence(seed).spawn(4)
        self.rngs = {"reference": streams[0], "reference_seam": streams[1], "set": streams[2], "seam": streams[3]}
        self.seed, self.num_projections, self.bootstrap_projections = seed, num_projections, bootstrap_projections
        whole = raw_levels(real, np.random.default_rng(self.rngs["reference"]))
        seam = self._seam(real, real_masks, "reference_seam")
        self.stats = {False: level_stats(whole), True: level_stats(seam)}
        self.reference, self.reference_projections = self._describe({False: whole, True: seam}, len(real))

    def _seam(self, images: np.ndarray, masks: np.ndarray, stream: str) -> dict:
        rng = np.random.default_rng(self.rngs[stream])
        return raw_levels(images, rng, masks=masks, edge_px=SEAM_EDGE_PX, num_levels=SEAM_LEVELS)

    def _describe(self, raw: dict, count: int, stats: dict | None = None) -> tuple[dict, dict]:
        """Normalised descriptors and bootstrap projections per variant."""
        levels, projections = {}, {}
        for key, (seam, referenced) in SWD_VARIANTS.items():
            levels[key] = normalise_levels(raw[seam], (stats or self.stats)[seam] if referenced else None)
            projections[key] = project_levels(levels[key], count, num_projections=self.bootstrap_projections)
        return levels, projections

    def score(self, images: np.ndarray, masks: np.ndarray) -> tuple[dict[str, float], dict[str, dict]]:
        """``({f"{variant}_{res}": SWD x 1e3}, {variant: bootstrap projections})`` of one set of images."""
        whole = raw_levels(images, np.random.default_rng(self.rngs["set"]))
        raw = {False: whole, True: self._seam(images, masks, "seam")}
        levels, projections = self._describe(raw, len(images))
        values = {}
        for key, level in levels.items():
            distances = swd_between(self.reference[key], level, num_projections=self.num_projections, seed=self.seed)
            values.update({f"{key}_{res}": v for res, v in distances.items()})
        return values, projections


class C2STJudge:
    """The classifier two-sample test of image sets against one real reference set, per region.

    Args:
        real: uint8 ``[M, S, S, 3]`` reference photos; ``real_masks`` ``[M, S, S]``; ``real_identities`` ``[M]``.
        regions: Regions of :data:`augmentor.evaluation.bands.REGIONS` to judge.
        config: Training settings and seeds (the same for every set: paired over seeds).
    """

    def __init__(
        self,
        real: np.ndarray,
        real_masks: np.ndarray,
        real_identities,
        regions: tuple[str, ...] = REGIONS,
        config: C2STConfig | None = None,
    ):
        self.config = config or C2STConfig()
        self.regions = regions
        self.identities = np.asarray(real_identities, dtype=str)
        self.real = {region: crop_region(real, real_masks, region) for region in regions}

    def score(self, images: np.ndarray, masks: np.ndarray, identities) -> dict[str, C2STResult]:
        """``{region: C2STResult}`` of one set (``identities``: one per image, split together with the reference's)."""
        identities = np.asarray(identities, dtype=str)
        return {
            region: c2st(self.real[region], crop_region(images, masks, region), self.identities, identities, self.config)
            for region in self.regions
        }

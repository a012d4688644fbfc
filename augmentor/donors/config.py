"""Settings of the donor method: which faces may be donors, how they are matched, how their context is composed."""

from __future__ import annotations

from dataclasses import dataclass

# Fields that change what the bank stores: a saved bank built with other values is rebuilt.
BANK_FIELDS = ("ring_width", "max_border_fraction", "max_padded_fraction", "min_context_valid")


@dataclass(frozen=True)
class DonorConfig:
    """Donor bank, search and composition settings. Tuned on CelebA validation identities
    (``benchmarks/donor_tune.py``), never on LFW."""

    # What the bank holds (BANK_FIELDS).
    ring_width: int = 5  # px inside the face mask whose colour describes a face's border
    max_border_fraction: float = 0.3  # skip donors whose aligned crop lay more than this outside the photo
    max_padded_fraction: float = 0.15  # skip donors from images padded by reflection beyond this (CelebA's column)
    min_context_valid: float = 0.75  # skip donors whose context (outside the face mask) is less inside the photo

    # Search: distance = sqrt(sum of the weighted group distances) + invalid_penalty * context share outside photo.
    colour_weight: float = 1.0  # weight of the border-ring colour group
    shape_weight: float = 3.0  # weight of the face-outline group (jaw and eyebrow landmarks); 1 -> 3 lowered the
    # seam error on CelebA validation (benchmarks/donor_tune.py)
    pose_weight: float = 0.5  # weight of the yaw/pitch group
    colour_scale: float = 8.0  # Lab units that count as one unit of distance
    shape_scale: float = 3.0  # aligned px that count as one unit of distance
    pose_scale: float = 0.05  # yaw/pitch proxy units that count as one unit of distance
    invalid_penalty: float = 4.0  # distance added per unit share of the donor's context filled by reflection
    # Appearance (look-alike donors, on by default): > 0 re-ranks the `candidates` nearest donors by the dlib-ResNet
    # descriptor distance of the two faces' chips (face pixels only), adding appearance_weight * L2 /
    # appearance_scale. It favours donors of a like sex and age: in 100 CelebA validation composites the clear
    # mismatches of apparent sex fell from about 6 to 1, and the realism judge did not object (C2ST differences
    # +0.006 / +0.023 / +0.039 on whole / jaw / forehead, each 95% CI holding 0; docs/donors.md). It costs a
    # descriptor pass per face (about 66 ms of CPU) and per donor when the bank is built. 0 turns it off.
    appearance_weight: float = 1.0
    appearance_scale: float = 0.3  # descriptor L2 that counts as one unit of distance (same person: < 0.6)
    candidates: int = 50  # donors the appearance term re-ranks

    # Composition.
    fit_outline: bool = True  # fit the donor's face outline to the target's with a similarity transform
    max_fit_scale: float = 0.12  # largest relative scale change of that fit (clamped to it)
    max_fit_shift: float = 8.0  # largest shift of that fit's outline centre, px (clamped to it)
    colour_near: float = 1.0  # share of the border colour shift applied at the seam
    colour_far: float = 0.4  # share of it applied far from the seam
    colour_decay: float = 10.0  # px over which the share falls from near to far
    max_lightness_shift: float = 25.0  # clip of the L shift (Lab units)
    max_chroma_shift: float = 12.0  # clip of the a and b shifts (Lab units)
    # Refined (seamless) composition only (augmentor.donors.seamless; DonorBank.recontext(..., refine=True)).
    warp_outline: bool = False  # also bend the donor's outline onto the target's (thin-plate spline); off: on CelebA
    # validation the judge caught the warped context more easily (whole-image C2ST 0.796 against 0.688 without it)
    max_warp: float = 10.0  # largest displacement of that warp at a landmark, px
    refined_band_dilation: int = 1  # px the donor's face is grown by before what shows of it is filled
    blend_levels: int = 3  # Laplacian-pyramid levels of the seam blend (the coarsest mixes over about 2**levels px)

    # Plain composition only.
    seam_width: int = 5  # px of context around the target's face re-solved by Poisson blending
    band_dilation: int = 2  # px the donor's own face region is grown by before it is hidden

    def bank_key(self) -> dict:
        """The settings a saved bank must share with this config to be reused."""
        return {name: getattr(self, name) for name in BANK_FIELDS}

    @property
    def appearance(self) -> bool:
        """Whether the search needs the faces' appearance descriptors (a bank without them is rebuilt)."""
        return self.appearance_weight > 0

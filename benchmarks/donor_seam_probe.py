"""Seam SWD of donor-composition variants on CelebA validation (never LFW): where the refined seam still differs.

Composes the same targets with the same donors (the default search, look-alike on, run once) in several ways and
scores each set's seam SWD (neighbourhoods within 3 px of the face-mask edge, 128 and 64 px) per-set normalised and
real-referenced, against real photos of other identities. Fast (seconds per variant): a screen before the C2ST
judge (``benchmarks/donor_realism.py``), not a verdict. Variants:

- ``real``: the targets' own photos (the floor); ``plain`` / ``refined``: the shipped compositions;
- ``self refined`` / ``self plain``: each target composed into its *own* context (donor = target): what the
  composition's mechanics cost when donor and target agree perfectly;
- ``refined, fine blend 1 px``: the finest blend band mixed with the mask blurred by 1 px instead of the hard mask;
- ``refined, local colour``: after the global Lab shift, a smooth local Lab correction measured on the target's
  border ring where the donor's face lies under it (normalised Gaussian, sigma 8 px), fading outwards over 30 px.

    python benchmarks/donor_seam_probe.py --split /tmp/dr --out benchmarks/results/donor_seam_probe.json

``--split``: the targets/, donors/ and reals/ folders written by ``benchmarks/donor_realism.py``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click
import numpy as np
from record import write_record

from augmentor.donors import DonorBank, DonorConfig
from augmentor.donors.compose import compose, distance_from, recolour
from augmentor.donors.features import from_lab, inner_ring, to_lab
from augmentor.donors.seamless import compose_refined, fill_and_blend, fit_donor
from augmentor.options import folder_option, int_option

KEYS = ("seam_swd_128", "seam_swd_64", "seam_swdr_128", "seam_swdr_64", "swd_128", "swdr_128")


def _local_colour(target, target_mask, recoloured, donor_mask, sigma=8.0, decay=30.0, clip=15.0):
    """A smooth Lab correction from the target's border ring (where the donor's face lies under it), fading out."""
    import cv2

    ring = inner_ring(target_mask, 5) & (donor_mask > 0)
    if ring.sum() < 20:
        return recoloured
    target_lab, donor_lab = to_lab(target), to_lab(np.clip(np.rint(recoloured), 0, 255).astype(np.uint8))
    diff = np.zeros_like(target_lab)
    diff[ring] = target_lab[ring] - donor_lab[ring]
    weight = cv2.GaussianBlur(ring.astype(np.float32), (0, 0), sigma)
    field = cv2.GaussianBlur(diff, (0, 0), sigma) / np.maximum(weight, 1e-3)[..., None]
    field = np.clip(field, -clip, clip) * np.minimum(1.0, weight / (0.05 * weight.max() + 1e-9))[..., None]
    share = np.exp(-distance_from(target_mask) / decay)[..., None]
    return from_lab(donor_lab + share * field).astype(np.float64)


def variant(fine_sigma: float = 0.0, local: bool = False):
    """The refined composition with a blurred finest blend weight and/or the local colour correction."""

    def fn(target, target_mask, target_landmarks, donor, donor_mask, donor_landmarks, donor_valid, config):
        donor, donor_mask = fit_donor(donor, donor_mask, donor_landmarks, target_landmarks, config)
        recoloured, _ = recolour(target, target_mask, donor, donor_mask, config)
        if local:
            recoloured = _local_colour(target, target_mask, recoloured, donor_mask)
        return fill_and_blend(target, target_mask, donor_mask, recoloured, config, fine_sigma)

    return fn


def own_context(how):
    """Compose every target into its own context (the donor is the target)."""
    return lambda t, m, lm, *_donor, config: how(t, m, lm, t, m, lm, None, config)


VARIANTS = {
    "real": None,
    "plain": compose,
    "refined": compose_refined,
    "self plain": own_context(compose),
    "self refined": own_context(compose_refined),
    "refined, fine blend 1 px": variant(fine_sigma=1.0),
    "refined, local colour": variant(local=True),
    "refined, local colour, fine blend 1 px": variant(fine_sigma=1.0, local=True),
}


@click.command()
@folder_option("--split", required=True, help="targets/, donors/ and reals/ from benchmarks/donor_realism.py.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSON results.")
@int_option("--limit", default=600, minimum=20, help="Targets and reals, each.")
def main(split: Path, out: Path, limit: int) -> None:
    """Seam SWD of each variant (see the module docstring)."""
    from donor_realism import load_faces

    from augmentor.evaluation.realism import SwdJudge

    config = DonorConfig()
    targets, reals = load_faces(split / "targets", limit, 0), load_faces(split / "reals", limit, 0)
    bank = DonorBank.load(split / "donors", config)
    chosen, _ = bank.search(targets.images, targets.masks, targets.landmarks, list(targets.identities), 1)
    judge = SwdJudge(reals.images, reals.masks, 0, 512, 8)
    results = {}
    for name, how in VARIANTS.items():
        start = time.perf_counter()
        images = (
            targets.images
            if how is None
            else np.stack(
                [
                    how(
                        targets.images[i],
                        targets.masks[i],
                        targets.landmarks[i],
                        *bank.donor(int(j))[:2],
                        bank.landmarks[int(j)],
                        bank.donor(int(j))[2],
                        config=config,
                    )
                    for i, j in enumerate(chosen[:, 0])
                ]
            )
        )
        values, _ = judge.score(images, targets.masks)
        results[name] = {k: float(values[k]) for k in KEYS} | {"seconds": time.perf_counter() - start}
        click.echo(f"{name:40s} " + "  ".join(f"{k} {values[k]:6.1f}" for k in KEYS))
    write_record(out, {"limit": limit, "config": dataclasses.asdict(config), "results": results})


if __name__ == "__main__":
    main()

"""Judge donor compositions with the realism test on CelebA (never LFW): C2ST per region and seam SWD, paired.

Splits a CelebA preprocess folder's identities three ways, with a seed: targets (their faces get new context),
donors (the bank), reals (the real class of the judge). Every variant composes the same targets with the same
donors; the C2ST uses the same seeds (identity split, JPEG draw, initialisation) for every variant, so the
variant-minus-plain differences are paired over seeds.

Prints a table and writes JSON::

    python benchmarks/donor_realism.py --celeba /root/data/pre-celeba-val --work /tmp/donor-realism \
        --out benchmarks/results/donor_realism.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

VARIANTS = {  # name -> (refine, DonorConfig overrides)
    "plain": (False, {}),
    "refined": (True, {}),
    "refined, outline warp": (True, {"warp_outline": True}),
    "refined, blend 2 levels": (True, {"blend_levels": 2}),
    "refined, blend 4 levels": (True, {"blend_levels": 4}),
    "refined, appearance 1": (True, {"appearance_weight": 1.0}),
    "refined, no fit": (True, {"fit_outline": False}),
    "refined, colour far 0": (True, {"colour_far": 0.0}),
    "refined, band dilation 2": (True, {"refined_band_dilation": 2}),
}


def split_three(celeba: Path, work: Path, seed: int) -> dict[str, Path]:
    """Write the targets', donors' and reals' rows of ``celeba``'s shards as three preprocess folders."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from augmentor.preprocessing.shards import read_shards

    table = read_shards(celeba, status="ok")
    names = np.unique(np.asarray(table["identity"].to_pylist(), dtype=str))
    groups = np.array_split(np.random.default_rng(seed).permutation(names), 3)
    folders = {}
    for part, members in zip(("targets", "donors", "reals"), groups):
        folder = work / part
        folder.mkdir(parents=True, exist_ok=True)
        rows = table.filter(pc.is_in(table["identity"].cast("string"), value_set=__import__("pyarrow").array(members)))
        pq.write_table(rows, folder / "part-00000.parquet")
        folders[part] = folder
    return folders


def load_faces(folder: Path, limit: int, seed: int):
    from augmentor.evaluation.evaluate import FaceSet, load_masked, select

    return FaceSet.from_shards(select(load_masked(folder), limit, seed).reset_index(drop=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--celeba", type=Path, required=True, help="an `augmentor preprocess` folder of CelebA")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the three splits")
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    parser.add_argument("--limit", type=int, default=800, help="targets and reals, each")
    parser.add_argument("--seeds", type=int, default=3, help="C2ST seeds")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="variants to judge (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity split and the sampling")
    parser.add_argument(
        "--skip-real", action="store_true", help="don't judge the real floor row (the same seeds pair runs anyway)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from augmentor.donors import DonorBank, DonorConfig
    from augmentor.evaluation.c2st import C2STConfig, t_interval
    from augmentor.evaluation.realism import C2STJudge, SwdJudge

    folders = split_three(args.celeba, args.work, args.seed)
    targets, reals = load_faces(folders["targets"], args.limit, args.seed), load_faces(folders["reals"], args.limit, args.seed)
    judge = C2STJudge(reals.images, reals.masks, reals.identities, config=C2STConfig(seeds=tuple(range(args.seeds))))
    swd = SwdJudge(reals.images, reals.masks, args.seed, 512, 8)
    results = {}
    rows = [] if args.skip_real else [("real (other identities)", None)]
    rows += [(v, VARIANTS[v]) for v in args.variants]
    for name, variant in rows:
        start = time.perf_counter()
        if variant is None:
            images = targets.images
        else:
            refine, overrides = variant
            bank = DonorBank.load(folders["donors"], dataclasses.replace(DonorConfig(), **overrides))
            found = bank.recontext(targets.images, targets.masks, targets.landmarks, list(targets.identities), 1, refine)
            images = np.stack([r[0].image for r in found])
        composed = time.perf_counter() - start
        judged = judge.score(images, targets.masks, targets.identities)
        values, _ = swd.score(images, targets.masks)
        results[name] = {
            "c2st": {r: res.accuracies for r, res in judged.items()},
            "swd": {k: v for k, v in values.items() if k.endswith(("_128", "_64"))},
            "compose_ms_per_image": 1e3 * composed / len(targets) if variant is not None else None,
        }
        line = "  ".join(f"{r} {np.mean(a):.3f}" for r, a in results[name]["c2st"].items())
        seam = "  ".join(f"{k} {v:.1f}" for k, v in results[name]["swd"].items() if k.startswith("seam"))
        print(f"{name:32s} {line}  {seam}  ({time.perf_counter() - start:.0f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"limit": args.limit, "seeds": args.seeds, "results": results}, indent=2))
    base = results.get("plain")
    if base is not None:
        for name, result in results.items():
            if name == "plain" or name.startswith("real"):
                continue
            for region, values in result["c2st"].items():
                diff = np.asarray(values) - np.asarray(base["c2st"][region])
                low, high = t_interval(diff)
                result.setdefault("c2st_minus_plain", {})[region] = [float(diff.mean()), low, high]
                print(f"{name:32s} {region:9s} minus plain {diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"limit": args.limit, "seeds": args.seeds, "results": results}, indent=2))


if __name__ == "__main__":
    main()

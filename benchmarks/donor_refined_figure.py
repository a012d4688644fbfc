"""Before and after figure of the donor composition: masked | plain | refined, with the jaw and forehead zoomed.

Uses a targets folder and a donors folder written by ``benchmarks/donor_realism.py`` (CelebA identities, never
LFW)::

    python benchmarks/donor_refined_figure.py --targets /tmp/donor-realism/targets \
        --donors /tmp/donor-realism/donors --rows 6 --out docs/img/donors-refined.png
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

HEADER = 16  # px of the label row
ZOOM = 2  # magnification of the edge windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=Path, required=True, help="preprocess folder of the target faces")
    parser.add_argument("--donors", type=Path, required=True, help="preprocess folder of the donors")
    parser.add_argument("--rows", type=int, default=6, help="faces")
    parser.add_argument("--seed", type=int, default=5, help="which faces")
    parser.add_argument("--appearance-weight", type=float, default=None, help="DonorConfig.appearance_weight")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    from augmentor.donors import DonorBank, DonorConfig
    from augmentor.evaluation.bands import WINDOW, window_origin

    sys.path.insert(0, str(Path(__file__).parent))
    from donor_realism import load_faces

    faces = load_faces(args.targets, args.rows, args.seed)
    config = DonorConfig()
    if args.appearance_weight is not None:
        config = dataclasses.replace(config, appearance_weight=args.appearance_weight)
    bank = DonorBank.load(args.donors, config)
    ids = list(faces.identities)
    plain = [r[0].image for r in bank.recontext(faces.images, faces.masks, faces.landmarks, ids, 1, refine=False)]
    refined = [r[0].image for r in bank.recontext(faces.images, faces.masks, faces.landmarks, ids, 1, refine=True)]

    def zoom(image: np.ndarray, mask: np.ndarray, region: str) -> np.ndarray:
        top, left = window_origin(mask, region)
        crop = image[top : top + WINDOW[0], left : left + WINDOW[1]]
        return np.asarray(Image.fromarray(crop).resize((WINDOW[1] * ZOOM, WINDOW[0] * ZOOM), Image.NEAREST))

    columns = ["masked", "plain", "refined", "plain jaw", "refined jaw", "plain forehead", "refined forehead"]
    rows = []
    for i in range(len(faces)):
        mask = faces.masks[i]
        tiles = [faces.masked[i], plain[i], refined[i]]
        tiles += [zoom(plain[i], mask, "jaw"), zoom(refined[i], mask, "jaw")]
        tiles += [zoom(plain[i], mask, "forehead"), zoom(refined[i], mask, "forehead")]
        height = max(t.shape[0] for t in tiles)
        rows.append(np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0))) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + HEADER), "white")
    canvas.paste(Image.fromarray(grid), (0, HEADER))
    draw, x = ImageDraw.Draw(canvas), 0
    widths = [128 + 4] * 3 + [WINDOW[1] * ZOOM + 4] * 4
    for title, width in zip(columns, widths):
        draw.text((x + 2, 2), title, fill="black")
        x += width
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The figure of docs/donors.md: original | masked | Navier-Stokes | cascade | naive donor | donor copies 0, 1, 2.

Reads the ``.npz`` of sample outputs that ``benchmarks/donor_quality.py --out X.json`` writes beside its JSON::

    python benchmarks/donor_figure.py benchmarks/results/donor_quality_lfw300.npz --rows 5 --out docs/img/donors.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLUMNS = (
    ("original", "original"),
    ("masked", None),
    ("cv2 NS", "cv2_Navier-Stokes"),
    ("cascade", "cascade"),
    ("naive donor", "donor_naive_(copy_0)"),
    ("donor 0", "donor_copy_0"),
    ("donor 1", "donor_copy_1"),
    ("donor 2", "donor_copy_2"),
)
HEADER = 18  # px of the label row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="the .npz written by benchmarks/donor_quality.py")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--colours", type=int, default=256, help="palette size; 0 keeps full RGB")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    with np.load(args.samples, allow_pickle=False) as data:
        arrays = {name: data[name][: args.rows] for name in data.files}
    masked = arrays["original"] * arrays["mask"][..., None]
    rows = [
        np.concatenate([masked[i] if key is None else arrays[key][i] for _, key in COLUMNS], axis=1)
        for i in range(len(masked))
    ]
    grid = np.concatenate(rows, axis=0)
    sheet = Image.new("RGB", (grid.shape[1], grid.shape[0] + HEADER), "white")
    sheet.paste(Image.fromarray(grid), (0, HEADER))
    draw = ImageDraw.Draw(sheet)
    size = grid.shape[1] // len(COLUMNS)
    for j, (label, _) in enumerate(COLUMNS):
        draw.text((j * size + 4, 3), label, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.colours:  # a palette keeps the committed PNG small
        sheet = sheet.quantize(args.colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    sheet.save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()

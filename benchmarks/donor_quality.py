"""Donor context against the cascade and cv2 Navier-Stokes: SSIM (whole image, background only) and multi-scale SWD.

Every method fills the context of the same preprocessed faces (for the issue: 300 LFW images, the test set; the
donor settings were tuned on CelebA validation identities by ``benchmarks/donor_tune.py``, never here). Scores
against the aligned originals:

- ``ssim``: whole-image SSIM, torchmetrics' (11x11 Gaussian window, sigma 1.5, data range 1), computed here so the
  figures do not move when ``augmentor.evaluation.metrics.ssim`` changes its definition;
- ``ssim_background``: the same SSIM map averaged over the context pixels only (mask 0);
- ``swd``: ProGAN's multi-scale sliced Wasserstein distance x 1e3 between the originals and the outputs, per
  pyramid level (``augmentor.evaluation.swd.multiscale_swd``), when that module is installed.

Rows: cv2 Navier-Stokes, the cascade (``--model``, default the shipped one), the donor method's nearest donor
(copy 0) and its copies 1 and 2, and a naive donor (no fit, no colour shift, no seam blending) for the ablation.
Prints a table and writes JSON::

    python benchmarks/donor_quality.py --faces runs/pre-lfw300 --donors /root/data/pre-celeba \
        --out benchmarks/results/donor_quality_lfw300.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

NAIVE = {"fit_outline": False, "colour_near": 0.0, "colour_far": 0.0, "seam_width": 0, "band_dilation": 0}


def ssim_both(a: np.ndarray, b: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image whole-image SSIM, and the mean of the SSIM map over the pixels outside the face mask."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    from augmentor.evaluation.metrics import to_tensor

    x, y = to_tensor(a).float() / 255.0, to_tensor(b).float() / 255.0
    whole, full = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, reduction="none",
        return_full_image=True,
    )  # fmt: skip
    per_pixel = full.mean(1)  # [N, H, W], channels averaged
    context = torch.from_numpy(masks == 0)
    return whole.numpy(), ((per_pixel * context).sum((1, 2)) / context.sum((1, 2)).clamp_min(1)).numpy()


def scores(outputs: np.ndarray, originals: np.ndarray, masks: np.ndarray) -> dict:
    whole, background = ssim_both(outputs, originals, masks)
    row = {"ssim": float(whole.mean()), "ssim_background": float(background.mean())}
    try:
        from augmentor.evaluation.swd import multiscale_swd
    except ImportError:
        row["swd"] = "unavailable: augmentor.evaluation.swd is not installed"
    else:
        row["swd"] = {str(k): float(v) for k, v in multiscale_swd(originals, outputs).items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, required=True, help="preprocess output folder of the target faces")
    parser.add_argument("--donors", type=Path, required=True, help="preprocess folder (or bank) of the donors")
    parser.add_argument("--model", type=Path, default=None, help="cascade checkpoint (default: the shipped one)")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--precision", default="auto", help="of the cascade: auto, fp32, bf16")
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    args = parser.parse_args()

    from augmentor.donors import DonorBank
    from augmentor.evaluation.baselines import fill_all, navier_stokes
    from augmentor.hallucinator import Hallucinator, default_weights
    from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

    table = read_shards(args.faces, status="ok").slice(0, args.limit).to_pydict()
    originals = np.stack([decode_png(b) for b in table["aligned"]])
    masks = np.stack([decode_mask(b) for b in table["mask"]])
    landmarks = np.asarray(table["landmarks"], np.float32).reshape(-1, 68, 2)
    identities = [str(i) for i in table["identity"]]
    masked = originals * masks[..., None]
    outputs, seconds, cpu = {}, {}, {}

    def clock(name: str, started: tuple[float, float]) -> None:  # wall and CPU seconds (all threads) since started
        seconds[name] = time.perf_counter() - started[0]
        cpu[name] = time.process_time() - started[1]

    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    start = now()
    outputs["cv2 Navier-Stokes"] = fill_all(navier_stokes, masked, masks)
    clock("cv2 Navier-Stokes", start)

    model = args.model or default_weights()
    hallucinator = Hallucinator.from_pretrained(model, device="cpu", batch_size=16, precision=args.precision)
    start = now()
    outputs["cascade"] = np.concatenate(
        [hallucinator(masked[i : i + 16], masks[i : i + 16]) for i in range(0, len(masked), 16)]
    )
    clock("cascade", start)

    bank = DonorBank.load(args.donors)
    start = now()
    results = bank.recontext(originals, masks, landmarks, identities, k=3)
    clock("donor, 3 copies", start)
    for k in range(3):
        outputs[f"donor copy {k}"] = np.stack([r[k].image for r in results])
    bank.config = dataclasses.replace(bank.config, **NAIVE)
    start = now()
    naive = bank.recontext(originals, masks, landmarks, identities, k=1)
    clock("donor naive", start)
    outputs["donor naive (copy 0)"] = np.stack([r[0].image for r in naive])

    for name, images in outputs.items():
        face = masks.astype(bool)
        assert np.array_equal(images[face], originals[face]), f"{name} changed face pixels"
    report = {
        "faces": str(args.faces),
        "donors": str(args.donors),
        "num_donors": len(bank),
        "model": str(model),
        "images": len(originals),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "methods": {name: scores(images, originals, masks) for name, images in outputs.items()},
    }
    print(f"{len(originals)} faces from {args.faces}; {len(bank)} donors from {args.donors}")
    print(f"{'method':<24} {'SSIM':>6} {'bg SSIM':>8}  SWD x1e3 per level")
    for name, row in report["methods"].items():
        swd = " / ".join(f"{v:.0f}" for v in row["swd"].values()) if isinstance(row["swd"], dict) else row["swd"]
        print(f"{name:<24} {row['ssim']:>6.3f} {row['ssim_background']:>8.3f}  {swd}")
    print("wall s / CPU s: " + ", ".join(f"{k} {seconds[k]:.1f} / {cpu[k]:.1f}" for k in seconds))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        figure = args.out.with_suffix(".npz")
        np.savez_compressed(figure, **{k.replace(" ", "_"): v[:16] for k, v in outputs.items()}, original=originals[:16],
                            mask=masks[:16])  # fmt: skip


if __name__ == "__main__":
    main()

"""A/B: does bf16 autocast in CPU training move the validation curve? Two short runs, identical but for `bf16`.

Both runs start from the same weights with the same seed (so the same batches, noise and augmentations) and train
the same steps; only ``bf16`` differs. Reported per epoch: the validation loss (computed in each run's own
precision) and, for every epoch's generator re-scored the same way in fp32 on the validation faces that lie inside
their photos, SSIM and multi-scale SWD (benchmarks/select_generator.py's scoring). The yardstick for "beyond noise"
is the epoch-to-epoch movement of the fp32 run itself.

    python benchmarks/bf16_ab.py --data /root/data/pre-celeba --config configs/train/cpu-gan.yaml \
        --epochs 3 --steps 40 --out /root/bf16-ab --json benchmarks/results/bf16_ab.json
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from select_generator import score, validation_faces

from augmentor.hallucinator import Hallucinator
from augmentor.options import file_option, folder_option, int_option

log = logging.getLogger("bf16_ab")
AUGMENTOR = Path(sys.executable).with_name("augmentor")
COMPARED = ("val_loss", "ssim", "swd_128", "swd_64")  # the summary's metrics


def train(data: Path, config: Path, out: Path, bf16: bool, epochs: int, steps: int, extra: list[str]) -> Path:
    """One run; returns its run folder (reused when it already finished)."""
    runs = sorted(out.glob("0*")) if out.exists() else []
    if runs and (runs[-1] / "last").exists():
        metrics = [json.loads(line) for line in (runs[-1] / "metrics.jsonl").read_text().splitlines()]
        if len(metrics) >= epochs:
            log.info("%s already trained, reusing it", runs[-1])
            return runs[-1]
    command = [str(AUGMENTOR), "train", "--data", str(data), "--config", str(config), "--out", str(out)]
    command += ["--epochs", str(epochs), "--set", f"max_steps_per_epoch={steps}", "--set", f"bf16={str(bf16).lower()}"]
    command += ["--set", "keep_every=1"] + [x for pair in (("--set", e) for e in extra) for x in pair]
    log.info("%s", " ".join(command))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    log.info("trained in %.0f s", time.perf_counter() - started)
    return max(out.glob("0*"))


@click.command(context_settings={"show_default": True})
@folder_option("--data", required=True, help="Preprocess output to train on (the config's data.extra_paths are added).")
@file_option("--config", required=True, help="Training recipe, e.g. configs/train/cpu-gan.yaml.")
@int_option("--epochs", minimum=1, default=3, help="Epochs per run.")
@int_option("--steps", minimum=1, default=40, help="Steps per epoch.")
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="More config overrides for both runs.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the two runs (out/bf16, out/fp32).",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON output file."
)
def main(data: Path, config: Path, epochs: int, steps: int, extra: tuple[str, ...], out: Path, json_path: Path) -> None:
    """Train the A/B pair, re-score every epoch in fp32, print the table and save JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    runs = {arm: train(data, config, out / arm, arm == "bf16", epochs, steps, list(extra)) for arm in ("fp32", "bf16")}
    images, masks = validation_faces(runs["fp32"])
    rows = []
    for arm, run in runs.items():
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for m in metrics:
            folder = run / "epochs" / f"epoch_{m['epoch']:04d}"
            scored = score(Hallucinator.from_pretrained(folder, device="cpu", precision="fp32"), images, masks)
            rows.append(
                {
                    "arm": arm,
                    "epoch": m["epoch"],
                    "val_loss": m["val_loss"],
                    "img_per_s": m["images_per_second"],
                    **scored,
                }
            )
    lines = [
        "| epoch | arm | img/s | val loss | SSIM (fp32) | SWD128 | SWD64 | SWD32 | SWD16 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["epoch"], r["arm"])):
        lines.append(
            f"| {r['epoch']} | {r['arm']} | {r['img_per_s']:.1f} | {r['val_loss']:.4f} | {r['ssim']:.4f} | "
            f"{r['swd_128']:.1f} | {r['swd_64']:.1f} | {r['swd_32']:.1f} | {r['swd_16']:.1f} |"
        )
    by = {(r["arm"], r["epoch"]): r for r in rows}
    gaps = {k: [abs(by["bf16", e][k] - by["fp32", e][k]) for e in range(1, epochs + 1)] for k in COMPARED}
    steps_fp32 = {k: [abs(by["fp32", e + 1][k] - by["fp32", e][k]) for e in range(1, epochs)] for k in COMPARED}
    summary = {
        k: {
            "max_bf16_fp32_gap": float(np.max(gaps[k])),
            "max_fp32_epoch_step": float(np.max(steps_fp32[k])) if steps_fp32[k] else None,
        }
        for k in gaps
    }
    table = "\n".join(lines)
    print(table)
    print(json.dumps(summary, indent=2))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(
        json.dumps(
            {
                "runs": {k: str(v) for k, v in runs.items()},
                "faces": len(images),
                "rows": rows,
                "summary": summary,
                "table": table,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

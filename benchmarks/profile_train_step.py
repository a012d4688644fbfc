"""Where a training step's time goes: torch.profiler over a few steps, per part of the step and per operator.

The trainer labels the parts of a step with ``record_function`` (augmentor/training/loop.py): ``g_forward``,
``d_step`` (the discriminators' update), ``g_d_scores`` (the discriminators scoring the fakes for the generator),
``g_losses`` (L1, SSIM, face-perceptual and identity networks, mode seeking), ``adv_grad_log`` (every
``log_every`` steps) and ``g_backward_step``. Profiles the old full-loss setting ("before": fp32, contiguous, plain
Adam, discriminators on every block) and the trained recipe, prints both tables and saves JSON.

    python benchmarks/profile_train_step.py --data /root/data/pre-celeba-extra --steps 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import write_record
from train_throughput import STEPS, build, measure, step_arguments, synthetic_faces

from augmentor.training.data import DataConfig, load_faces
from augmentor.training.loop import Trainer

PARTS = ("g_forward", "d_step", "g_d_scores", "g_losses", "adv_grad_log", "g_backward_step")


def profile_steps(trainer: Trainer, steps: int) -> dict:
    """Profile ``steps`` steps after one warm-up: milliseconds per step by part, and the top operators."""
    measure(trainer, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        measure(trainer, steps)
    events = prof.key_averages()
    parts = {e.key: e.cpu_time_total / 1e3 / steps for e in events if e.key in PARTS}
    step_ms = sum(parts.values())
    ops = sorted(
        (e for e in events if e.key not in PARTS and not e.key.startswith("ProfilerStep")),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )[:12]
    return {
        "ms_per_step_in_parts": round(step_ms, 1),
        "parts_ms_per_step": {k: round(parts.get(k, 0.0), 1) for k in PARTS},
        "parts_share": {k: round(parts.get(k, 0.0) / step_ms, 3) for k in PARTS} if step_ms else {},
        "top_ops_self_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / steps, 1) for e in ops},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_arguments(parser, "benchmarks/results/profile_train_step.json")
    args = parser.parse_args()

    faces = load_faces(DataConfig(path=str(args.data), limit=64)) if args.data else synthetic_faces(64)
    settings = {
        "before": build(args.config, STEPS["before"], args),
        "recipe": build(args.recipe, ["data.extra_paths=[]"], args),
    }
    report = {"batch_size": args.batch_size, "steps": args.steps, "threads": torch.get_num_threads(), "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in settings.items():
            result = profile_steps(Trainer(cfg, Path(tmp) / name, faces), args.steps)
            report["settings"][name] = result
            print(f"\n{name}: {result['ms_per_step_in_parts']:.0f} ms per step (batch {args.batch_size})")
            for part in PARTS:
                share = result["parts_share"].get(part, 0.0)
                print(f"  {part:16} {result['parts_ms_per_step'][part]:8.1f} ms  {100 * share:5.1f}%")
            print("  top operators (self time, ms per step):")
            for op, ms in result["top_ops_self_ms_per_step"].items():
                print(f"    {op:40} {ms:8.1f}")
    write_record(args.out, report)


if __name__ == "__main__":
    main()

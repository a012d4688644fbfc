"""Pictures of what the tool does: preprocess contact sheets, training sample grids and loss curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards


def save_png(array: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def tile(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Concatenate equal-size ``[H, W, 3]`` uint8 tiles into a grid (rows of columns)."""
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def shard_preview(shard_dir: str | Path, out_path: str | Path, max_faces: int = 16, columns: int = 8) -> Path | None:
    """Write a PNG grid: for each of the first ``max_faces`` ok rows, the aligned crop over its masked input.

    Returns:
        The PNG path, or None when the folder holds no ok row.
    """
    table = read_shards(shard_dir, columns=["aligned", "mask"], status="ok").slice(0, max_faces)
    if table.num_rows == 0:
        return None
    tiles = []
    for aligned, mask in zip(table["aligned"].to_pylist(), table["mask"].to_pylist()):
        image = decode_png(aligned)
        tiles.append(np.concatenate([image, image * decode_mask(mask)[..., None]], axis=0))
    while len(tiles) % columns and len(tiles) > columns:
        tiles.append(np.zeros_like(tiles[0]))
    return save_png(tile([tiles[i : i + columns] for i in range(0, len(tiles), columns)]), out_path)


def cascade_grid(masked: np.ndarray, outputs: dict[int, np.ndarray], truth: np.ndarray | None = None) -> np.ndarray:
    """One row per face: masked input | output of every block (upscaled, nearest) | ground truth.

    Args:
        masked: ``[B, S, S, 3]`` uint8.
        outputs: ``{N: [B, N, N, 3] uint8}``.
        truth: ``[B, S, S, 3]`` uint8 or None.
    """
    size = masked.shape[1]
    rows = []
    for i in range(masked.shape[0]):
        row = [masked[i]]
        for r, out in sorted(outputs.items()):
            k = size // r
            row.append(np.repeat(np.repeat(out[i], k, axis=0), k, axis=1))
        if truth is not None:
            row.append(truth[i])
        rows.append(row)
    return tile(rows)


def plot_loss_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Plot train and validation losses per epoch from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not lines:
        return None
    epochs = [m["epoch"] for m in lines]
    keys = sorted({k for m in lines for k in m["train"]})
    groups: dict[str, dict[int, str]] = {}  # term -> {block resolution (0: none): key}
    for key in keys:
        name, _, block = key.rpartition("_")
        if block.isdigit():
            groups.setdefault(name, {})[int(block)] = key
        else:
            groups.setdefault(key, {})[0] = key
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(3.6 * (len(groups) + 1), 3.2), squeeze=False)
    for ax, (name, members) in zip(axes[0], sorted(groups.items())):
        for block, key in sorted(members.items()):
            ax.plot(epochs, [m["train"].get(key, np.nan) for m in lines], label=str(block) if block else None)
        ax.set_title(f"train {name}")
        ax.set_xlabel("epoch")
        if len(members) > 1:
            ax.legend(fontsize=7, title="block")
    ax = axes[0][-1]
    ax.plot(epochs, [m.get("val_loss", np.nan) for m in lines], marker="o")
    ax.set_title("validation loss")
    ax.set_xlabel("epoch")
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def plot_gan_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """The adversarial game per epoch from ``metrics.jsonl``: mean raw D(real) and D(fake), the norm of the
    adversarial gradient reaching the generator, per block, and the validation SWD and SSIM where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    blocks = sorted({int(k.rsplit("_", 1)[1]) for m in lines for k in m["train"] if k.startswith("d_real_")})
    if not lines or not blocks:
        return None
    epochs = [m["epoch"] for m in lines]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for r in blocks:
        axes[0].plot(epochs, [m["train"].get(f"d_real_{r}", np.nan) for m in lines], label=f"{r} real")
        axes[0].plot(epochs, [m["train"].get(f"d_fake_{r}", np.nan) for m in lines], "--", label=f"{r} fake")
        axes[1].plot(epochs, [m["train"].get(f"adv_grad_{r}", np.nan) for m in lines], marker=".", label=str(r))
    axes[0].set_title("mean raw D score")
    axes[1].set_title("adversarial gradient norm at G's output")
    axes[1].set_yscale("log")
    swd_keys = sorted(
        {k for m in lines for k in m.get("quality", {}) if k.startswith("swd_")}, key=lambda k: -int(k[4:])
    )
    for key in swd_keys:
        axes[2].plot(epochs, [m.get("quality", {}).get(key, np.nan) for m in lines], marker=".", label=key[4:] + " px")
    axes[2].set_title("validation SWD x1e3 (lower: more realistic)")
    axes[3].plot(epochs, [m.get("quality", {}).get("ssim", np.nan) for m in lines], marker=".")
    axes[3].set_title("validation SSIM")
    for ax in axes:
        ax.set_xlabel("epoch")
    for ax in axes[:3]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path

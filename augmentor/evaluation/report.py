"""Evaluation outputs: the Table 1 markdown, the Figure 5-style comparison grid and the match histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# The paper's Table 1 (LFW). Match: ResNet-50/VGGFace2 256-D features; FID: Inception-v3; PieAPP.
PAPER_TABLE_1 = [
    ("GenFace", 0.543, 0.491, 177.06, 3.536),
    ("DeepFillv1", 0.481, 0.321, 241.696, 3.204),
    ("SymmFCNet", 0.457, 0.333, 207.117, 2.434),
    ("EdgeConnect", 0.454, 0.178, 141.695, 3.106),
    ("DeepFake", 0.459, 0.448, 43.03, 1.857),
    ("ProGAN", 0.668, 0.466, 103.71, 2.255),
    ("Cascaded", 0.722, 0.753, 46.12, 1.256),
]


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def table_markdown(report: dict) -> str:
    """Our rows and the paper's, side by side, each column naming the network behind it."""
    match_net = report["match_features"]
    lines = [
        f"# Hallucination quality on {report['images_scored']} images",
        "",
        (
            f"Match: mean Pearson correlation of {match_net} features of hallucinated vs aligned original (whole "
            "image). SSIM: Wang et al., 11x11 Gaussian, sigma 1.5. FID-face / KID-face: Fréchet / kernel distance "
            "on dlib-ResNet 128-D features (not Inception; comparable only between runs of this tool). Face-perc: "
            "RMS distance of dlib-ResNet feature maps. dlib L2: descriptor distance; < 0.6: share under dlib's "
            "same-person threshold."
        ),
        "",
        (
            f"| method | match ({match_net}) ↑ | SSIM ↑ | FID-face (dlib 128-D) ↓ | KID-face ↓ | face-perc ↓ | "
            "LPIPS (AlexNet) ↓ | PieAPP ↓ | FID (Inception) ↓ | dlib L2 ↓ | < 0.6 ↑ |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        lines.append(
            f"| {name} | {_fmt(m['mean_match'])} | {_fmt(m['mean_ssim'])} | {_fmt(m['fid_face'], 2)} | "
            f"{_fmt(m['kid_face'], 4)} | {_fmt(m['mean_face_perceptual'])} | {_fmt(m.get('mean_lpips'))} | "
            f"{_fmt(m.get('mean_pieapp'))} | {_fmt(m.get('fid_inception'), 2)} | {_fmt(m['mean_dlib_l2'])} | "
            f"{_fmt(m['mean_same_person'])} |"
        )
    lines += [
        "",
        "## The paper's Table 1 (LFW), for reference",
        "",
        "| method | match (ResNet-50/VGGFace2 256-D) ↑ | SSIM ↑ | FID (Inception) ↓ | PieAPP ↓ |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} (paper) | {a} | {b} | {c} | {d} |" for n, a, b, c, d in PAPER_TABLE_1]
    if report.get("unavailable"):
        lines += ["", "## Not measured in this run", ""]
        lines += [f"- **{k}**: {v}" for k, v in report["unavailable"].items()]
    lines += [
        "",
        (
            f"{report['images_scored']} of {report['images_requested']} images masked "
            f"({report['masking']}); {report['seconds']} s on {report['device']}."
        ),
        "",
    ]
    return "\n".join(lines)


def comparison_figure(
    masked: np.ndarray, outputs: dict[str, np.ndarray], originals: np.ndarray, path: Path, rows: int
) -> Path:
    """Rows = images; columns = masked input | each method | original (like the paper's Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(rows, len(masked))
    columns = [("masked input", masked), *outputs.items(), ("original", originals)]
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows + 0.4), squeeze=False)
    for c, (title, images) in enumerate(columns):
        axes[0][c].set_title(title, fontsize=7)
        for r in range(rows):
            axes[r][c].imshow(images[r])
            axes[r][c].axis("off")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def match_histogram(per_image: pd.DataFrame, path: Path, label: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(per_image["match"].min(), 1.0, 40)
    for name, group in per_image.groupby("method", sort=False):
        ax.hist(group["match"], bins=bins, histtype="step", linewidth=1.4, label=name)
    ax.set_xlabel(f"per-image match score ({label})")
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_reports(
    report: dict,
    per_image: pd.DataFrame,
    masked: np.ndarray,
    outputs: dict[str, np.ndarray],
    originals: np.ndarray,
    out_dir: Path,
    figure_rows: int,
) -> None:
    """table.md, comparison.png and match_histogram.png in ``out_dir``."""
    (out_dir / "table.md").write_text(table_markdown(report))
    comparison_figure(masked, outputs, originals, out_dir / "comparison.png", figure_rows)
    match_histogram(per_image, out_dir / "match_histogram.png", report["match_features"])

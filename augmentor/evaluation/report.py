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


SWD_LEVELS = (128, 64, 32, 16)
# (column header, metrics.json key, digits, scale); per-image means first, then the set-level distances.
COLUMNS = [
    ("SSIM ↑", "mean_ssim", 3, 1),
    ("SSIM bg ↑", "mean_ssim_background", 3, 1),
    *[(f"SWD{r} ↓", f"swd_{r}", 1, 1) for r in SWD_LEVELS],
    ("FID-face ↓", "fid_face", 3, 1),
    ("KID-face ×1e3 ↓", "kid_face", 2, 1e3),
    ("match ↑", "mean_match", 3, 1),
    ("face-perc ↓", "mean_face_perceptual", 3, 1),
    ("LPIPS ↓", "mean_lpips", 3, 1),
    ("PieAPP ↓", "mean_pieapp", 3, 1),
    ("FID (Inception) ↓", "fid_inception", 2, 1),
    ("dlib L2 ↓", "mean_dlib_l2", 3, 1),
    ("dlib L2 (chip) ↓", "mean_chip_l2", 3, 1),
    ("< 0.6 (chip) ↑", "mean_same_person", 3, 1),
]
METRIC_NAMES = {key.removeprefix("mean_"): header.split(" ↑")[0].split(" ↓")[0] for header, key, _, _ in COLUMNS}
METRIC_NAMES.update({f"swdr_{r}": f"SWD{r} (real-ref)" for r in SWD_LEVELS})
METRIC_NAMES.update({f"seam_swd_{r}": f"seam SWD{r} (per-set)" for r in SWD_LEVELS})
METRIC_NAMES.update({f"seam_swdr_{r}": f"seam SWD{r} (real-ref)" for r in SWD_LEVELS})
METRIC_NAMES.update({f"c2st_{r}": f"C2ST {r}" for r in ("whole", "jaw", "forehead")})
DIFF_SCALE = {"kid_face": 1e3}


def _cell(m: dict, key: str, digits: int, scale: float) -> str:
    value = m.get(key)
    return _fmt(None if value is None else value * scale, digits)


def _differences_markdown(report: dict, key: str = "differences") -> list[str]:
    rows = report.get(key) or []
    if not rows:
        return []
    against_first = key == "model_differences"
    title = (
        f"## Each model minus the first model ({rows[0]['baseline']}), paired bootstrap 95% CI"
        if against_first
        else "## Model minus the best baseline, paired bootstrap 95% CI"
    )
    lines = [
        "",
        title,
        "",
        (
            f"Resampled over the {report['images_scored']} evaluation images (paired: the same draw for the model "
            f"and the baseline) and, for the set-level distances, over the {report['reference_images']} reference "
            f"images; {report['settings']['num_bootstrap']} resamples ({report['settings']['swd_bootstrap']} for "
            f"SWD: the spread of a {report['settings']['swd_bootstrap_projections']}-direction bootstrap, centred on "
            "the full estimate). Wins: share of images on "
            "which the model scores better. A verdict needs a CI that excludes 0."
        ),
        "",
        "| model | metric | first model | model − first | 95% CI | model wins on | verdict |"
        if against_first
        else "| model | metric | best baseline | model − baseline | 95% CI | model wins on | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in rows:
        scale = DIFF_SCALE.get(d["metric"], 1)
        digits = 1 if "swd" in d["metric"] else 4
        wins = "—" if d["wins"] is None else f"{100 * d['wins']:.1f}%"
        verdict = d["verdict"].replace("baseline", "first model") if against_first else d["verdict"]
        lines.append(
            f"| {d['model']} | {METRIC_NAMES.get(d['metric'], d['metric'])} | {d['baseline']} | "
            f"{d['value'] * scale:+.{digits}f} | [{d['low'] * scale:+.{digits}f}, {d['high'] * scale:+.{digits}f}] | "
            f"{wins} | {verdict} |"
        )
    return lines


def _c2st_cell(accuracies: list[float] | None) -> str:
    from augmentor.evaluation.c2st import t_interval

    if not accuracies:
        return "—"
    low, high = t_interval(np.asarray(accuracies))
    interval = "" if not np.isfinite(low) else f" [{low:.3f}, {high:.3f}]"
    return f"{np.mean(accuracies):.3f}{interval}"


def realism_markdown(report: dict) -> list[str]:
    """The realism table: C2ST per region (mean over seeds, t-interval), SWD in both normalisations, seam SWD."""
    c2st = (report.get("c2st") or {}).get("accuracies") or {}
    regions = list(next(iter(c2st.values()), {}))
    seeds = len(next(iter(next(iter(c2st.values()), {}).values()), []))
    swd_keys = [k for k in ("swdr_128", "swdr_64", "seam_swd_128", "seam_swd_64", "seam_swdr_128", "seam_swdr_64")]
    swd_keys = [k for k in swd_keys if any(k in m for m in report["methods"].values())]
    if not regions and not swd_keys:
        return []
    lines = [
        "",
        "## Realism: can a small CNN tell the set from real photos, and do the seams show?",
        "",
        (
            f"C2ST: balanced test accuracy of a 4-convolution CNN trained to tell the set from the reference photos "
            f"(split by identity, the same random JPEG round-trip, quality 70-95, on both classes), mean over {seeds} "
            "seeds with the seeds' 95% t-interval; 0.5 = indistinguishable. jaw / forehead: 40x80 px windows on "
            "the face-mask edge (augmentor/evaluation/bands.py). SWD real-ref: ProGAN's descriptors normalised by "
            "the reference set's statistics (blur stays visible) instead of each set's own (the SWD columns above). "
            "Seam SWD: neighbourhoods centred within 3 px of the face-mask edge. The real row is the floor."
        ),
        "",
        "| method | " + " | ".join([*(f"C2ST {r} ↓" for r in regions), *(METRIC_NAMES[k] + " ↓" for k in swd_keys)]) + " |",
        "|---|" + "---|" * (len(regions) + len(swd_keys)),
    ]
    for name, m in report["methods"].items():
        cells = [_c2st_cell(c2st.get(name, {}).get(r)) for r in regions] + [_cell(m, k, 1, 1) for k in swd_keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    seconds = (report.get("c2st") or {}).get("seconds") or {}
    if seconds:
        lines += ["", f"C2ST time per set (all regions and seeds): {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}."]
    return lines


def copies_markdown(report: dict) -> list[str]:
    """Diversity of copies and the per-image metrics of every copy."""
    copies = report.get("copies") or {}
    if not copies:
        return []
    lines = [
        "",
        "## Copies: how different are a face's copies, and are the later copies as good as copy 0?",
        "",
        (
            "Grey difference: mean absolute difference (0-255, RGB mean) between every two copies of a face over its "
            "context pixels (mean over faces; p90 over faces). Descriptor distance: mean L2 between the dlib-ResNet "
            "descriptors of two copies' context alone (face blacked out). Then SSIM and match of each copy."
        ),
        "",
        "| method | copies | grey difference | p90 | descriptor distance | SSIM per copy | match per copy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in copies.items():
        ssim = " / ".join(_fmt(p.get("ssim")) for p in c["per_copy"])
        match = " / ".join(_fmt(p.get("match")) for p in c["per_copy"])
        lines.append(
            f"| {name} | {c['copies']} | {c['context_grey_difference']:.2f} | {c['context_grey_difference_p90']:.2f} | "
            f"{c['context_descriptor_distance']:.3f} | {ssim} | {match} |"
        )
    return lines


def table_markdown(report: dict) -> str:
    """Our rows, the real-vs-real floor, the CIs and the paper's rows, each column naming the network behind it."""
    match_net = report["match_features"]
    n, n_ref, dim = report["images_scored"], report["reference_images"], report["feature_dim"]
    lines = [
        f"# Hallucination quality on {n} images (reference set: {n_ref} disjoint real images)",
        "",
        (
            f"Models run in **{report['precision']}** on {report['device']}; every metric network in fp32. "
            "SSIM: Wang et al. as scikit-image computes it (11x11 Gaussian, σ 1.5, population covariances, "
            "data range 255, valid region only, mean over RGB); SSIM bg: the same map over the background "
            "(mask == 0) pixels only. SWD128 … SWD16: ProGAN's sliced Wasserstein distance ×1e3 per Laplacian level "
            "(7x7 neighbourhoods, 512 directions) against the reference set. FID-face / KID-face: Fréchet / "
            f"kernel distance of dlib-ResNet {dim}-D descriptors of the whole image against the reference set (not "
            f"Inception). Match: mean Pearson correlation of {match_net} features with the original's (whole "
            "image). Face-perc: RMS distance of dlib-ResNet feature maps. dlib L2: descriptor distance to the "
            "original (whole image). dlib L2 (chip) and < 0.6 (chip), with --chip-identity: the same on dlib's "
            "150 px face chips as verify-lfw cuts them, and the share under dlib's same-person threshold. Columns "
            "nothing was measured for are left out (see the end). The 'real (held-out originals)' row scores the originals themselves "
            "against the reference set: the floor of every set-level distance at this N."
        ),
    ]
    if min(n, n_ref) < 2 * dim:
        lines += [
            "",
            (
                f"**Warning:** {min(n, n_ref)} images is under 2x the {dim}-D feature dimension: FID-face is biased "
                "upward and unstable here; read it against the real-vs-real floor only."
            ),
        ]
    columns = [c for c in COLUMNS if any(m.get(c[1]) is not None for m in report["methods"].values())]
    lines += [
        "",
        "| method | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, m in report["methods"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(m, key, d, s) for _, key, d, s in columns) + " |")
    lines += realism_markdown(report)
    lines += copies_markdown(report)
    lines += _differences_markdown(report)
    lines += _differences_markdown(report, "model_differences")
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
            f"{report['images_scored']} of {report['images_requested']} images and {report['reference_images']} of "
            f"{report['reference_requested']} reference images masked ({report['masking']}); "
            f"{report['seconds']} s on {report['device']}."
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

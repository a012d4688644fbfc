"""Every model-minus-best-baseline difference of an evaluation run, with a paired bootstrap 95% CI."""

from __future__ import annotations

import numpy as np

from augmentor.evaluation.scorer import PER_IMAGE_METRICS
from augmentor.evaluation.stats import (
    Difference,
    best,
    bootstrap_counts,
    fid_differences,
    kid_differences,
    paired_mean_difference,
    percentile_ci,
)
from augmentor.evaluation.swd import sorted_resample, swd_sorted


def per_image_differences(
    model: str, scores: dict[str, dict[str, np.ndarray]], baselines: list[str], counts: np.ndarray
) -> list[Difference]:
    """For each per-image metric, the model minus the baseline with the best mean: CI and win share."""
    out = []
    for metric, higher in PER_IMAGE_METRICS.items():
        if metric not in scores[model]:
            continue
        means = {b: float(np.nanmean(scores[b][metric])) for b in baselines}
        base = best(means, higher)
        value, low, high, wins = paired_mean_difference(scores[model][metric], scores[base][metric], counts, higher)
        out.append(Difference(metric, model, base, higher, value, low, high, wins))
    return out


def set_differences(
    model: str,
    summary: dict[str, dict[str, float]],
    baselines: list[str],
    features: dict[str, np.ndarray],
    reference: np.ndarray,
    kernels,
    k_rr: np.ndarray,
    counts: np.ndarray,
    ref_counts: np.ndarray,
) -> list[Difference]:
    """FID-face and KID-face of the model minus the best baseline's, both against the reference set."""
    out = []
    base = best({b: summary[b]["fid_face"] for b in baselines}, False)
    samples = fid_differences(reference, features[model], features[base], counts, ref_counts)
    value = summary[model]["fid_face"] - summary[base]["fid_face"]
    out.append(Difference("fid_face", model, base, False, value, *percentile_ci(samples)))
    base = best({b: summary[b]["kid_face"] for b in baselines}, False)
    samples = kid_differences(kernels, k_rr, model, base, counts, ref_counts)
    value = summary[model]["kid_face"] - summary[base]["kid_face"]
    out.append(Difference("kid_face", model, base, False, value, *percentile_ci(samples)))
    return out


def swd_differences(
    model: str,
    summary: dict[str, dict[str, float]],
    baselines: list[str],
    projections: dict[str, dict[int, np.ndarray]],
    reference: dict[int, np.ndarray],
    num: int,
    seed: int,
    prefix: str = "swd",
) -> list[Difference]:
    """SWD per level, model minus the best baseline, bootstrapped over evaluation and reference images.

    ``prefix`` names the variant (``swd``, ``swdr``, ``seam_swd``, ``seam_swdr``: see
    :mod:`augmentor.evaluation.realism`); ``summary`` holds ``f"{prefix}_{res}"`` and the projections are that
    variant's.

    The point value is the full SWD (every direction). The CI comes from resampling the images' projections on
    fewer directions (:func:`augmentor.evaluation.swd.project_levels`): the bootstrap differences' spread around
    the same few-direction estimate on the unresampled sets, centred on the full value (a resample repeats images,
    which biases SWD itself upward, so raw percentiles would be off-centre).
    """
    n_eval = next(iter(projections[model].values())).shape[1]
    n_ref = next(iter(reference.values())).shape[1]
    counts, ref_counts = bootstrap_counts(n_eval, num, seed), bootstrap_counts(n_ref, num, seed + 1)
    out = []
    for res, real in reference.items():
        key = f"{prefix}_{res}"
        base = best({b: summary[b][key] for b in baselines}, False)
        ones, ref_ones = np.ones(n_eval), np.ones(n_ref)
        real_sorted = sorted_resample(real, ref_ones)
        centre = swd_sorted(real_sorted, sorted_resample(projections[model][res], ones)) - swd_sorted(
            real_sorted, sorted_resample(projections[base][res], ones)
        )
        samples = []
        for c, rc in zip(counts, ref_counts):
            real_sorted = sorted_resample(real, rc)
            samples.append(
                swd_sorted(real_sorted, sorted_resample(projections[model][res], c))
                - swd_sorted(real_sorted, sorted_resample(projections[base][res], c))
            )
        value = summary[model][key] - summary[base][key]
        out.append(Difference(key, model, base, False, value, *percentile_ci(value + np.asarray(samples) - centre)))
    return out


def c2st_differences(model: str, accuracies: dict[str, dict[str, list[float]]], baselines: list[str]) -> list[Difference]:
    """Per region, the model's C2ST accuracy minus the best (lowest) baseline's, paired over seeds.

    Args:
        accuracies: ``{method: {region: [accuracy per seed]}}``; every method was judged with the same seeds, so the
            seed's identity split, JPEG draw and initialisation cancel in the difference.

    The CI is Student's t over the per-seed differences (wide with few seeds: it says how far the seeds agree).
    """
    from augmentor.evaluation.c2st import t_interval

    out = []
    for region, values in accuracies[model].items():
        means = {b: float(np.mean(accuracies[b][region])) for b in baselines if region in accuracies.get(b, {})}
        if not means:
            continue
        base = best(means, False)
        diff = np.asarray(values) - np.asarray(accuracies[base][region])
        out.append(Difference(f"c2st_{region}", model, base, False, float(diff.mean()), *t_interval(diff)))
    return out

"""Paired bootstrap confidence intervals for model-minus-baseline differences, per image and per set.

Every difference is resampled over the same evaluation images for the model and the baseline (paired), so the
shared difficulty of an image cancels. Set-level distances (FID, KID, SWD against the real reference set) also
resample the reference images, the same draw for both terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from augmentor.evaluation.metrics import frechet_from_moments, kid_from_kernels


@dataclass
class Difference:
    """Model minus its best baseline on one metric, with a percentile-bootstrap 95% CI."""

    metric: str
    model: str
    baseline: str  # the baseline with the best point value on this metric
    higher_is_better: bool
    value: float  # model - baseline
    low: float  # 2.5th percentile of the bootstrap differences
    high: float  # 97.5th percentile
    wins: float | None = None  # share of images on which the model scores better (per-image metrics only)

    @property
    def verdict(self) -> str:
        """``model better``, ``baseline better`` or ``not established`` (the CI holds 0)."""
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.low <= 0 <= self.high:
            return "not established"
        model_higher = self.low > 0
        return "model better" if model_higher == self.higher_is_better else "baseline better"


def bootstrap_counts(n: int, num: int, seed: int) -> np.ndarray:
    """``[num, n]`` multiplicities of ``n`` items in ``num`` bootstrap resamples (each row sums to ``n``)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(num)]).astype(np.float64)


def percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.nanpercentile(samples, [2.5, 97.5])  # a tiny resample can leave KID undefined (NaN)
    return float(low), float(high)


def best(values: dict[str, float], higher_is_better: bool) -> str:
    """The key of the best value, NaNs ignored."""
    finite = {k: v for k, v in values.items() if v is not None and np.isfinite(v)}
    return (max if higher_is_better else min)(finite, key=finite.get)


def paired_mean_difference(
    model: np.ndarray, baseline: np.ndarray, counts: np.ndarray, higher_is_better: bool
) -> tuple[float, float, float, float]:
    """Mean of ``model - baseline`` per image, its bootstrap 95% CI and the model's win share.

    NaN images (e.g. no background pixel in the SSIM's valid region) are left out of every term.

    Returns:
        ``(difference, low, high, wins)``.
    """
    diff = np.asarray(model, np.float64) - np.asarray(baseline, np.float64)
    keep = np.isfinite(diff)
    diff, counts = diff[keep], counts[:, keep]
    samples = counts @ diff / counts.sum(1)
    wins = np.mean(diff > 0) if higher_is_better else np.mean(diff < 0)
    return (float(diff.mean()), *percentile_ci(samples), float(wins))


def weighted_moments(features: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of ``[N, D]`` features whose rows appear ``counts`` times."""
    n = counts.sum()
    mu = counts @ features / n
    centred = features - mu
    return mu, (centred.T * counts) @ centred / (n - 1)


def fid_differences(
    reference: np.ndarray, model: np.ndarray, baseline: np.ndarray, counts: np.ndarray, ref_counts: np.ndarray
) -> np.ndarray:
    """Bootstrap samples of ``FID(ref, model) - FID(ref, baseline)`` on ``[N, D]`` features."""
    out = []
    for c, rc in zip(counts, ref_counts):
        mu_r, s_r = weighted_moments(reference, rc)
        out.append(
            frechet_from_moments(mu_r, s_r, *weighted_moments(model, c))
            - frechet_from_moments(mu_r, s_r, *weighted_moments(baseline, c))
        )
    return np.asarray(out)


def kid_differences(
    kernels: Callable[[str], tuple[np.ndarray, np.ndarray]],
    k_rr: np.ndarray,
    model: str,
    baseline: str,
    counts: np.ndarray,
    ref_counts: np.ndarray,
) -> np.ndarray:
    """Bootstrap samples of ``KID(ref, model) - KID(ref, baseline)``; ``kernels(name)`` gives ``(K_ff, K_rf)``."""
    k_mm, k_rm = kernels(model)
    k_bb, k_rb = kernels(baseline)
    return np.asarray(
        [
            kid_from_kernels(k_rr, k_mm, k_rm, rc, c) - kid_from_kernels(k_rr, k_bb, k_rb, rc, c)
            for c, rc in zip(counts, ref_counts)
        ]
    )

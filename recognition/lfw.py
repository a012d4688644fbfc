"""The LFW pairs protocol: pairs files, scores, ROC, and the 10-fold threshold selection. Pure numpy (+ sklearn folds).

View 2 (``pairs.txt``): header ``10<TAB>300``, then 10 sets of 300 matched ``name n1 n2`` lines followed by 300
mismatched ``name1 n1 name2 n2`` lines. View 1 (``pairsDevTrain.txt`` / ``pairsDevTest.txt``): header ``N``, then N
matched and N mismatched lines. The threshold of fold k is the one that maximises accuracy on the other folds, as in
insightface's ``calculate_roc`` (``recognition/arcface_torch/eval/verification.py``), but searched over every distinct
score instead of a fixed grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from augmentor.errors import InputError

Metric = Literal["pearson", "cosine"]
FPR_TARGETS = (0.01, 0.001)  # the operating points reported (paper Table 2: TPR at FPR = 0.01)


class PairsError(InputError):
    """A pairs file that does not follow the LFW format."""


def image_relpath(name: str, number: int) -> str:
    """``Name/Name_0001.jpg``: where LFW keeps image ``number`` of ``name`` under the images root."""
    return f"{name}/{name}_{number:04d}.jpg"


@dataclass(frozen=True)
class Pairs:
    """The pairs of one LFW pairs file, in file order."""

    left: tuple[str, ...]  # relative image paths (see image_relpath)
    right: tuple[str, ...]
    same: np.ndarray  # [P] bool, True for a matched pair
    fold: np.ndarray  # [P] int, the set (View 2) the pair belongs to; all 0 for View 1
    num_folds: int
    source: str = ""  # the file it was read from

    def __len__(self) -> int:
        return len(self.left)

    def images(self) -> list[str]:
        """Every image named by a pair, sorted, once."""
        return sorted(set(self.left) | set(self.right))

    def limit(self, per_fold: int) -> Pairs:
        """The first ``per_fold`` matched and first ``per_fold`` mismatched pairs of every fold (for quick runs)."""
        keep = np.zeros(len(self), bool)
        for k in range(self.num_folds):
            for same in (True, False):
                idx = np.flatnonzero((self.fold == k) & (self.same == same))[:per_fold]
                keep[idx] = True
        idx = np.flatnonzero(keep)
        return Pairs(
            tuple(self.left[i] for i in idx),
            tuple(self.right[i] for i in idx),
            self.same[idx],
            self.fold[idx],
            self.num_folds,
            self.source,
        )


def _ints(tokens: list[str], where: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError as exc:
        raise PairsError(f"{where}: expected integers, got {' '.join(tokens)!r}") from exc


def read_pairs(path: str | Path) -> Pairs:
    """Parse a View 2 (``pairs.txt``) or View 1 (``pairsDevTrain/Test.txt``) file.

    Raises:
        FileNotFoundError: the file does not exist.
        PairsError: a line does not fit the format, or the counts do not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    lines = [(i + 1, line.split()) for i, line in enumerate(path.read_text().splitlines()) if line.strip()]
    if not lines:
        raise PairsError(f"{path} is empty")
    header = _ints(lines[0][1], f"{path}:{lines[0][0]} (header)")
    if len(header) == 2:
        num_folds, per_fold = header
    elif len(header) == 1:
        num_folds, per_fold = 1, header[0]
    else:
        raise PairsError(f"{path}:1: the header must be 'FOLDS<TAB>N' (View 2) or 'N' (View 1), got {header}")
    body = lines[1:]
    if num_folds < 1 or per_fold < 1 or len(body) != 2 * num_folds * per_fold:
        raise PairsError(
            f"{path}: the header promises {num_folds} x ({per_fold} matched + {per_fold} mismatched) = "
            f"{2 * num_folds * per_fold} pairs, the file holds {len(body)}"
        )
    left, right, same, fold = [], [], [], []
    for i, (lineno, tokens) in enumerate(body):
        k, pos = divmod(i, 2 * per_fold)
        matched = pos < per_fold
        where = f"{path}:{lineno}"
        if matched:
            if len(tokens) != 3:
                raise PairsError(f"{where}: a matched pair is 'name n1 n2', got {' '.join(tokens)!r}")
            n1, n2 = _ints(tokens[1:], where)
            a, b = image_relpath(tokens[0], n1), image_relpath(tokens[0], n2)
        else:
            if len(tokens) != 4:
                raise PairsError(f"{where}: a mismatched pair is 'name1 n1 name2 n2', got {' '.join(tokens)!r}")
            n1, n2 = _ints([tokens[1], tokens[3]], where)
            a, b = image_relpath(tokens[0], n1), image_relpath(tokens[2], n2)
        left.append(a)
        right.append(b)
        same.append(matched)
        fold.append(k)
    return Pairs(tuple(left), tuple(right), np.array(same, bool), np.array(fold, np.int64), num_folds, str(path))


# --------------------------------------------------------------------------------------------------- scores


def pair_scores(features: np.ndarray, left: np.ndarray, right: np.ndarray, metric: Metric = "pearson") -> np.ndarray:
    """Similarity of feature rows ``left[i]`` and ``right[i]`` of ``features`` ``[N, D]``: ``[P]`` in [-1, 1].

    ``pearson`` (the paper) centres each feature vector before the cosine; ``cosine`` does not.
    """
    feats = np.asarray(features, np.float64)
    if metric == "pearson":
        feats = feats - feats.mean(axis=1, keepdims=True)
    elif metric != "cosine":
        raise InputError(f"unknown metric {metric!r}; use pearson or cosine")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return np.einsum("pd,pd->p", feats[left], feats[right])


# --------------------------------------------------------------------------------------------------- ROC


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points of "same when score >= threshold", one per distinct score, from (0, 0) to (1, 1).

    Returns:
        ``(fpr, tpr, thresholds)``, as ``sklearn.metrics.roc_curve(same, scores, drop_intermediate=False)``.
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    num_pos, num_neg = int(same.sum()), int((~same).sum())
    if num_pos == 0 or num_neg == 0:
        raise InputError(f"a ROC needs matched and mismatched pairs ({num_pos} matched, {num_neg} mismatched)")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], same[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    fpr = np.r_[0.0, fp / num_neg]
    tpr = np.r_[0.0, tp / num_pos]
    return fpr, tpr, np.r_[np.inf, s[last]]


def tpr_at_fpr(scores: np.ndarray, same: np.ndarray, target: float) -> float:
    """The highest TPR among thresholds whose FPR is at most ``target`` (no interpolation)."""
    fpr, tpr, _ = roc(scores, same)
    return float(tpr[fpr <= target + 1e-12].max())


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids)."""
    fpr, tpr, _ = roc(scores, same)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def eer(scores: np.ndarray, same: np.ndarray) -> float:
    """Equal error rate: where the false-accept and false-reject rates cross (mean of the two at the closest point)."""
    fpr, tpr, _ = roc(scores, same)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises accuracy of "same when score > threshold" on these pairs.

    Every cut between two distinct sorted scores is tried; the threshold is the midpoint of the best cut (the
    highest one on ties). Returns ``(threshold, accuracy)``.
    """
    fpr, tpr, thresholds = roc(scores, same)
    num_pos = int(np.asarray(same, bool).sum())
    num_neg = len(scores) - num_pos
    correct = tpr * num_pos + (1.0 - fpr) * num_neg  # cut just below thresholds[i]
    i = int(np.argmax(correct))
    upper = thresholds[i]
    lower = thresholds[i + 1] if i + 1 < len(thresholds) else thresholds[i] - 1.0
    threshold = float(lower + (upper - lower) / 2) if np.isfinite(upper) else float(thresholds[1] + 1.0)
    return threshold, float(correct[i] / len(scores))


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs classified right by "same when score > threshold"."""
    return float(np.mean((np.asarray(scores) > threshold) == np.asarray(same, bool)))


# --------------------------------------------------------------------------------------------------- protocol


@dataclass
class Verification:
    """The protocol's numbers for one model. ``*_pooled`` come from one ROC over every pair; ``*_fold_*`` from one
    ROC per fold, then the mean and (population) standard deviation over folds."""

    accuracy_mean: float  # test-fold accuracy with the threshold chosen on the other folds
    accuracy_std: float
    fold_accuracy: list[float]
    fold_threshold: list[float]
    tpr_pooled: dict[str, float]  # "0.01" -> TPR at FPR <= 0.01 over all pairs
    tpr_fold_mean: dict[str, float]  # "0.01" -> mean over folds of the per-fold TPR at FPR <= 0.01
    tpr_fold_std: dict[str, float]
    fold_tpr: dict[str, list[float]]  # "0.01" -> per-fold TPR
    auc: float
    eer: float
    num_pairs: int
    num_folds: int
    threshold_source: str  # how thresholds were chosen
    notes: list[str] = field(default_factory=list)


def _tpr_block(scores: np.ndarray, same: np.ndarray, fold: np.ndarray, folds: list[int], targets) -> tuple:
    pooled = {str(t): tpr_at_fpr(scores, same, t) for t in targets}
    per_fold = {str(t): [tpr_at_fpr(scores[fold == k], same[fold == k], t) for k in folds] for t in targets}
    return pooled, per_fold


def kfold_verification(
    scores: np.ndarray,
    same: np.ndarray,
    fold: np.ndarray,
    targets: tuple[float, ...] = FPR_TARGETS,
    threshold_source: str = "the other folds",
) -> Verification:
    """Accuracy with each fold's threshold chosen on the remaining folds, plus pooled and per-fold TPR at FPR.

    Args:
        scores: ``[P]`` pair similarities.
        same: ``[P]`` True for matched pairs.
        fold: ``[P]`` fold index of each pair (at least 2 folds).
        targets: FPR operating points.
        threshold_source: Recorded in the result.
    """
    scores, same, fold = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(fold)
    folds = sorted(set(fold.tolist()))
    if len(folds) < 2:
        raise ValueError("the k-fold protocol needs at least 2 folds")
    accs, thresholds = [], []
    for k in folds:
        test = fold == k
        threshold, _ = best_threshold(scores[~test], same[~test])
        thresholds.append(threshold)
        accs.append(accuracy(scores[test], same[test], threshold))
    pooled, per_fold = _tpr_block(scores, same, fold, folds, targets)
    notes = []
    min_neg = min(int((~same[fold == k]).sum()) for k in folds)
    for t in targets:
        if t * min_neg < 1:
            notes.append(
                f"per-fold TPR at FPR={t}: a fold has only {min_neg} mismatched pairs, so it is the TPR at zero "
                "false accepts; the pooled value is the one to quote"
            )
    return Verification(
        accuracy_mean=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        fold_accuracy=accs,
        fold_threshold=thresholds,
        tpr_pooled=pooled,
        tpr_fold_mean={t: float(np.mean(v)) for t, v in per_fold.items()},
        tpr_fold_std={t: float(np.std(v)) for t, v in per_fold.items()},
        fold_tpr=per_fold,
        auc=auc(scores, same),
        eer=eer(scores, same),
        num_pairs=len(scores),
        num_folds=len(folds),
        threshold_source=threshold_source,
        notes=notes,
    )


def cross_validation_folds(same: np.ndarray, num_folds: int = 10, seed: int = 0) -> np.ndarray:
    """Stratified fold ids for a pairs file without folds (View 1), via scikit-learn."""
    from sklearn.model_selection import StratifiedKFold

    same = np.asarray(same, bool)
    fold = np.zeros(len(same), np.int64)
    splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(same)), same)):
        fold[test] = k
    return fold


def fixed_threshold_verification(
    train_scores: np.ndarray,
    train_same: np.ndarray,
    scores: np.ndarray,
    same: np.ndarray,
    targets: tuple[float, ...] = FPR_TARGETS,
) -> Verification:
    """View 1 with a training file: the threshold is chosen on ``train_*`` and applied once to the test pairs."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    threshold, _ = best_threshold(train_scores, train_same)
    acc = accuracy(scores, same, threshold)
    fold = np.zeros(len(scores), np.int64)
    pooled, per_fold = _tpr_block(scores, same, fold, [0], targets)
    return Verification(
        accuracy_mean=acc,
        accuracy_std=0.0,
        fold_accuracy=[acc],
        fold_threshold=[threshold],
        tpr_pooled=pooled,
        tpr_fold_mean={t: v[0] for t, v in per_fold.items()},
        tpr_fold_std={t: 0.0 for t in per_fold},
        fold_tpr=per_fold,
        auc=auc(scores, same),
        eer=eer(scores, same),
        num_pairs=len(scores),
        num_folds=1,
        threshold_source="the training pairs file",
    )

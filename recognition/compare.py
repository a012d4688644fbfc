"""Compare verify-lfw reports in the paper's Table 2 layout, with a verdict against the fold-to-fold noise.

Every model is compared with the first (the baseline) on the *same* pairs, fold by fold: the paired per-fold
differences give a mean ± standard deviation, a paired t statistic and an exact two-sided sign test. A difference is
called larger than the noise when both tests give p < 0.05. Reports made with ``verify-lfw --context`` add a table
per context, each compared with the baseline under the same context.

Runs of several seeds (labels ``ARM-sSEED``, or ``--arm``) are compared over seeds instead: :mod:`recognition.arms`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augmentor.errors import InputError

ALPHA = 0.05  # significance level of the verdict
REPORT_NAME = "report.json"
REPORT_KEYS = (
    "num_folds", "fold_accuracy", "fold_tpr", "tpr_pooled", "tpr_fold_mean", "tpr_fold_std", "accuracy_mean",
    "accuracy_std",
)  # fmt: skip  # what the tables and tests read from each model of a report


@dataclass
class Row:
    """One model of one report."""

    label: str
    entry: dict  # the report's models[name]
    pairs: str  # pairs file, for the comparability check
    num_pairs: int
    context: str = "original"  # verify-lfw --context: the second image of every pair re-contexted


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not a verify-lfw report ({exc})") from exc
    if not isinstance(report, dict):
        raise InputError(f"{path} is not a verify-lfw report (not a JSON object)")
    return report


def read_runs(specs: list[str]) -> list[Row]:
    """``[NAME=]PATH`` specs (a verify-lfw output folder or its report.json) -> one row per model and context in
    each report (the original context first).

    Raises:
        FileNotFoundError: no report at a path.
        InputError: a report that is not JSON or lacks the numbers compared.
    """
    rows = []
    for spec in specs:
        name, sep, path_text = spec.partition("=")
        if not sep:
            name, path_text = "", spec
        path = Path(path_text)
        report_path = path / REPORT_NAME if path.is_dir() else path
        if not report_path.is_file():
            raise FileNotFoundError(f"{spec}: no {REPORT_NAME} (run `augmentor verify-lfw --out` first)")
        report = _read_report(report_path)
        models = report.get("models", {})
        for model, entry in models.items():
            if missing := [key for key in REPORT_KEYS if key not in entry]:
                raise InputError(f"{report_path}: model {model} lacks {', '.join(missing)}; rerun verify-lfw")
            label = model if not name else (name if len(models) == 1 else f"{name}/{model}")
            pairs, num_pairs = Path(report.get("pairs", "")).name, int(report.get("num_pairs", 0))
            rows.append(Row(label, entry, pairs, num_pairs))
            for context, result in (entry.get("contexts") or {}).items():
                rows.append(Row(label, {**entry, **result}, pairs, num_pairs, context))
    return rows


def paired_test(a: list[float], b: list[float]) -> dict[str, float | int]:
    """Per-fold ``b - a``: mean, sample std, paired t (and two-sided p) and the exact two-sided sign test."""
    from scipy import stats

    diff = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    k = len(diff)
    mean = float(diff.mean())
    std = float(diff.std(ddof=1)) if k > 1 else 0.0
    if k > 1 and std > 0:
        t = mean / (std / math.sqrt(k))
        p_t = float(2 * stats.t.sf(abs(t), k - 1))
    else:
        t, p_t = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0 if k > 1 else 1.0)
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    p_sign = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return {
        "folds": k,
        "mean": mean,
        "std": std,
        "t": float(t),
        "p_t": p_t,
        "wins": wins,
        "losses": losses,
        "ties": k - wins - losses,
        "p_sign": p_sign,
    }


def _count(entry: dict, key: str) -> str:
    data = (entry.get("training") or {}).get("data") or {}
    return f"{data[key]:,}" if key in data else "—"


def table(rows: list[Row]) -> str:
    """The Table 2 markdown: training images and identities, hallucinated images, TPR at FPR=0.01, accuracy."""
    header = (
        "| model | training images (real) | identities | hallucinated images | TPR@FPR=0.01 (pooled) "
        "| TPR@FPR=0.01 (fold mean ± std) | accuracy (mean ± std) |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        e = row.entry
        lines.append(
            f"| {row.label} | {_count(e, 'real_images')} | {_count(e, 'identities')} "
            f"| {_count(e, 'hallucinated_images')} | {e['tpr_pooled']['0.01']:.4f} "
            f"| {e['tpr_fold_mean']['0.01']:.4f} ± {e['tpr_fold_std']['0.01']:.4f} "
            f"| {e['accuracy_mean']:.4f} ± {e['accuracy_std']:.4f} |"
        )
    return "\n".join(lines)


def _verdict_line(metric: str, test: dict) -> str:
    significant = test["p_t"] < ALPHA and test["p_sign"] < ALPHA
    direction = "better" if test["mean"] > 0 else "worse"
    judgement = f"**{direction}, beyond the fold-to-fold noise**" if significant else "within the fold-to-fold noise"
    return (
        f"{metric}: {test['mean']:+.4f} ± {test['std']:.4f} over {test['folds']} folds, t = {test['t']:.2f} "
        f"(p = {test['p_t']:.3f}), sign test {test['wins']} up / {test['losses']} down / {test['ties']} tied "
        f"(p = {test['p_sign']:.3f}): {judgement}"
    )


def compare(rows: list[Row]) -> tuple[str, dict]:
    """The markdown (table + verdicts) and the numbers behind the verdicts.

    Raises:
        InputError: fewer than two models, or reports made on different pairs.
    """
    contexts = list(dict.fromkeys(r.context for r in rows))
    tests: dict[str, dict] = {}
    text: list[str] = []
    for context in contexts:
        in_context = [r for r in rows if r.context == context]
        if len(contexts) > 1:
            text += [f"**Context: {context}**", ""]
        text += _compare_context(in_context, tests, "" if context == "original" else f" [{context}]")
    text.append(
        f"Verdict rule: larger than the noise when the paired t test and the sign test both give p < {ALPHA}. "
        "Pooled TPR comes from one ROC over all pairs; the per-fold TPR (300 mismatched pairs per fold on View 2) "
        "allows at most 3 false accepts at FPR=0.01, so it is noisier."
    )
    return "\n".join(text), tests


def _compare_context(rows: list[Row], tests: dict[str, dict], suffix: str) -> list[str]:
    """The table and the fold-paired verdicts of the models of one context (the first is the baseline)."""
    if len(rows) < 2:
        raise InputError(f"need at least two models to compare, got {len(rows)}")
    base = rows[0]
    text = [table(rows), ""]
    for row in rows[1:]:
        if (row.pairs, row.num_pairs) != (base.pairs, base.num_pairs) or row.entry["num_folds"] != base.entry[
            "num_folds"
        ]:
            raise InputError(
                f"{row.label} was scored on {row.num_pairs} pairs of {row.pairs}, {base.label} on {base.num_pairs} "
                f"of {base.pairs}: compare runs made with the same pairs file and --limit"
            )
        accuracy = paired_test(base.entry["fold_accuracy"], row.entry["fold_accuracy"])
        tpr = paired_test(base.entry["fold_tpr"]["0.01"], row.entry["fold_tpr"]["0.01"])
        tests[row.label + suffix] = {"accuracy": accuracy, "tpr_at_fpr_0.01": tpr}
        text.append(f"**{row.label} vs {base.label}** (paired by fold, {row.label} minus {base.label}):")
        text.append("")
        text.append(f"- {_verdict_line('accuracy', accuracy)}")
        text.append(f"- {_verdict_line('TPR@FPR=0.01 (per fold)', tpr)}")
        if accuracy["folds"] < 6:
            text.append(f"- only {accuracy['folds']} folds: the sign test cannot reach p < {ALPHA}")
        text.append("")
    return text

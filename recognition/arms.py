"""Arms of a recognition experiment: several training runs (seeds) of one training set, compared over seeds.

A verify-lfw model label names its arm and seed by convention, ``[GROUP/]ARM-sSEED`` (``pretrained/real-s0``,
``scratch/cascade-s2``): runs with the same ``GROUP/ARM`` form an arm. ``GROUP`` (the regime) is optional; arms
are only compared within their group. Arms can also be listed explicitly (``--arm NAME=LABEL[,LABEL...]``).

Each arm is summarised per context by the mean ± sample standard deviation over its runs (the training noise) of
each run's fold mean, next to the mean over runs of the fold-to-fold standard deviation (the evaluation noise).
Each arm is tested against the group's baseline arm (``real``) on the per-run numbers: a paired t test when both
arms have runs of the same seeds, else Welch's t test. The verdict is a **gain** or a **loss** when p < 0.05 and
**inside the noise** otherwise. For every context other than ``original``, the arm's *drop* (context minus
original, per run) is tested the same way against the baseline's drop: a smaller drop is the robustness to context
that the paper's claim predicts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from augmentor.errors import InputError
from recognition.compare import ALPHA, Row

SEED_LABEL = re.compile(r"^(?P<arm>.+)-s(?P<seed>\d+)$")  # "pretrained/real-s0" -> arm "pretrained/real", seed 0
SPREAD_EPS = 1e-12  # differences that vary less than this are treated as constant (float rounding, no t test)
BASELINE = "real"  # the arm every other arm of its group is tested against
METRICS = {  # name in the output -> how to read it from a report entry
    "accuracy": lambda e: e["accuracy_mean"],
    "TPR@FPR=0.01": lambda e: e["tpr_pooled"]["0.01"],
    "TPR@FPR=0.001": lambda e: e["tpr_pooled"]["0.001"],
}


@dataclass
class Arm:
    """The runs of one training set: ``labels[i]`` is the verify-lfw model of seed ``seeds[i]`` (None: unknown)."""

    name: str  # GROUP/ARM, or ARM
    labels: list[str]
    seeds: list[int | None]
    rows: dict[str, dict[str, Row]] = field(default_factory=dict)  # context -> label -> row

    @property
    def group(self) -> str:
        return self.name.rpartition("/")[0]

    @property
    def short(self) -> str:
        return self.name.rpartition("/")[2]

    def values(self, context: str, metric: str) -> list[float]:
        """The metric of every run under ``context``, in ``labels`` order."""
        read = METRICS[metric]
        return [read(self.rows[context][label].entry) for label in self.labels]

    def drops(self, context: str, metric: str) -> list[float]:
        """Per run: the metric under ``context`` minus the metric of the original images."""
        return [c - o for c, o in zip(self.values(context, metric), self.values("original", metric), strict=True)]


def uses_arms(rows: list[Row], arm_specs: list[str]) -> bool:
    """Arm mode: ``--arm`` was given or a model label follows ``ARM-sSEED``."""
    return bool(arm_specs) or any(SEED_LABEL.match(r.label) for r in rows)


def _seed(label: str) -> int | None:
    match = SEED_LABEL.match(label)
    return int(match["seed"]) if match else None


def group_arms(rows: list[Row], arm_specs: list[str] | tuple[str, ...] = ()) -> list[Arm]:
    """The arms of ``rows``: from ``NAME=LABEL[,LABEL...]`` specs, else from the ``ARM-sSEED`` labels (a label
    that does not follow it is an arm of one run). Arms keep the order their first run appears in.

    Raises:
        InputError: a malformed spec, a label no report holds, a label in two arms, or a run missing a context.
    """
    labels = list(dict.fromkeys(r.label for r in rows))
    members: dict[str, list[str]] = {}
    if arm_specs:
        for spec in arm_specs:
            name, sep, listed = spec.partition("=")
            names = [n.strip() for n in listed.split(",") if n.strip()]
            if not sep or not name or not names:
                raise InputError(f"--arm {spec!r}: expected NAME=LABEL[,LABEL...]")
            unknown = [n for n in names if n not in labels]
            if unknown:
                raise InputError(f"--arm {name}: no model {', '.join(unknown)} in the reports (models: {labels})")
            members[name] = names
        seen = [n for names in members.values() for n in names]
        if len(seen) != len(set(seen)):
            raise InputError("a model is listed in two --arm options")
    else:
        for label in labels:
            match = SEED_LABEL.match(label)
            members.setdefault(match["arm"] if match else label, []).append(label)
    arms = []
    for name, names in members.items():
        seeds = [_seed(n) for n in names]
        if None in seeds or len(set(seeds)) != len(seeds):
            seeds = [None] * len(names)  # no seed pairing for this arm
        arm = Arm(name, names, seeds)
        for row in rows:
            if row.label in names:
                arm.rows.setdefault(row.context, {})[row.label] = row
        for context, by_label in arm.rows.items():
            if len(by_label) != len(names):
                missing = sorted(set(names) - set(by_label))
                raise InputError(f"arm {name}: {', '.join(missing)} not scored under context {context}")
        arms.append(arm)
    return arms


def _no_spread() -> dict:
    """Identical differences on every seed (or no spread in either arm): a t test is undefined, and on a small pair
    set discrete accuracies make this happen by chance, so no verdict is claimed."""
    return {"t": math.nan, "p": math.nan, "verdict": "untested (no spread between runs to test against)"}


def seed_test(base: Arm, arm: Arm, a: list[float], b: list[float]) -> dict:
    """``b - a`` over runs: paired t test when both arms have runs of the same seeds, else Welch's t test.

    Returns:
        ``test`` (paired, welch or none), the runs, the mean difference and its spread, ``t``, ``p`` and a verdict
        (gain, loss, inside the noise, or untested with the reason).
    """
    from scipy import stats

    paired = None not in base.seeds and sorted(base.seeds) == sorted(arm.seeds) and len(a) > 1
    result: dict = {"runs_baseline": len(a), "runs": len(b), "mean_baseline": float(np.mean(a))}
    result["mean"] = float(np.mean(b))
    if paired:
        order_a = [a[base.seeds.index(s)] for s in sorted(base.seeds)]
        order_b = [b[arm.seeds.index(s)] for s in sorted(arm.seeds)]
        diff = np.subtract(order_b, order_a)
        result |= {"test": "paired", "diff_mean": float(diff.mean()), "diff_std": float(diff.std(ddof=1))}
        if result["diff_std"] <= SPREAD_EPS:
            return result | _no_spread()
        t, p = stats.ttest_rel(order_b, order_a)
    elif len(a) > 1 and len(b) > 1:
        result |= {"test": "welch", "diff_mean": float(np.mean(b) - np.mean(a))}
        result["diff_std"] = float(math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))
        if result["diff_std"] <= SPREAD_EPS:
            return result | _no_spread()
        t, p = stats.ttest_ind(b, a, equal_var=False)
    else:
        result |= {"test": "none", "diff_mean": float(np.mean(b) - np.mean(a)), "diff_std": math.nan}
        result |= {"t": math.nan, "p": math.nan, "verdict": "untested (one run in an arm: train more seeds)"}
        return result
    result |= {"t": float(t), "p": float(p)}
    if p < ALPHA:
        result["verdict"] = "gain" if result["diff_mean"] > 0 else "loss"
    else:
        result["verdict"] = "inside the noise"
    return result


def _baseline(arms: list[Arm], group: str, baseline: str) -> Arm | None:
    in_group = [a for a in arms if a.group == group]
    return next((a for a in in_group if a.short == baseline), in_group[0] if in_group else None)


def _pm(values: list[float]) -> str:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return f"{np.mean(values):.4f} ± {std:.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def _count(arm: Arm, key: str) -> str:
    counts = {((r.entry.get("training") or {}).get("data") or {}).get(key) for r in arm.rows["original"].values()}
    counts.discard(None)
    return "—" if not counts else " / ".join(f"{c:,}" for c in sorted(counts))


def arm_table(arms: list[Arm], context: str) -> str:
    """One row per arm: runs, training counts, and each metric as mean ± std over runs and mean fold std."""
    lines = [
        (
            "| arm | runs (seeds) | training images (real) | hallucinated images "
            "| accuracy: mean ± std over runs | accuracy: fold std (mean over runs) "
            "| TPR@FPR=0.01 pooled: mean ± std over runs | TPR@FPR=0.01: fold std (mean over runs) "
            "| TPR@FPR=0.001 pooled: mean ± std over runs |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in arms:
        if context not in arm.rows:
            continue
        entries = [arm.rows[context][label].entry for label in arm.labels]
        seeds = ",".join("?" if s is None else str(s) for s in arm.seeds)
        lines.append(
            f"| {arm.name} | {len(arm.labels)} ({seeds}) | {_count(arm, 'real_images')} "
            f"| {_count(arm, 'hallucinated_images')} | {_pm(arm.values(context, 'accuracy'))} "
            f"| {np.mean([e['accuracy_std'] for e in entries]):.4f} | {_pm(arm.values(context, 'TPR@FPR=0.01'))} "
            f"| {np.mean([e['tpr_fold_std']['0.01'] for e in entries]):.4f} "
            f"| {_pm(arm.values(context, 'TPR@FPR=0.001'))} |"
        )
    return "\n".join(lines)


def compare_arms(rows: list[Row], arm_specs: list[str] | tuple[str, ...] = (), baseline: str = BASELINE):
    """The markdown (a table per context, then the tests) and the numbers behind it.

    Raises:
        InputError: see :func:`group_arms`; reports scored on different pairs; or no arm to compare with a
            baseline.
    """
    scored_on = {(r.pairs, r.num_pairs, r.entry["num_folds"]) for r in rows}
    if len(scored_on) > 1:
        raise InputError(
            f"the reports were scored on different pairs ({sorted(scored_on)}): use the same pairs file and --limit"
        )
    arms = group_arms(rows, arm_specs)
    contexts = list(dict.fromkeys(r.context for r in rows))
    text: list[str] = []
    for context in contexts:
        text += [f"**Context: {context}** (mean ± sample std over runs; fold std: the mean over runs)", ""]
        text += [arm_table(arms, context), ""]
    tests: list[dict] = []
    lines = [
        "| arm | vs | context | metric | difference: mean ± std | test | t | p | verdict |",
        "|---|---|---|---|---:|---|---:|---:|---|",
    ]
    for arm in arms:
        base = _baseline(arms, arm.group, baseline)
        if base is None or base is arm:
            continue
        for context in contexts:
            if context not in arm.rows or context not in base.rows:
                continue
            for metric in METRICS:
                kinds = [(metric, base.values(context, metric), arm.values(context, metric))]
                if context != "original" and "original" in arm.rows and "original" in base.rows:
                    kinds.append((f"{metric} drop", base.drops(context, metric), arm.drops(context, metric)))
                for name, a, b in kinds:
                    test = seed_test(base, arm, a, b)
                    tests.append({"arm": arm.name, "baseline": base.name, "context": context, "metric": name, **test})
                    lines.append(
                        f"| {arm.name} | {base.name} | {context} | {name} | {test['diff_mean']:+.4f} ± "
                        f"{test['diff_std']:.4f} | {test['test']} | {test['t']:.2f} | {test['p']:.3f} "
                        f"| **{test['verdict']}** |"
                    )
    if not tests:
        raise InputError(f"no arm to compare with a baseline arm ({baseline!r}) of its group")
    text += ["**Arms vs the baseline** (arm minus baseline; per run, over seeds)", "", *lines, ""]
    text.append(
        f"Verdict rule: gain or loss when the t test over runs gives p < {ALPHA}, else inside the noise. Paired by "
        "seed when both arms have runs of the same seeds (std: of the paired differences), else Welch's t test "
        "(std: the standard error of the difference). A 'drop' row tests (context − original) of the arm against "
        "that of the baseline: a gain there means the arm loses less when the background changes."
    )
    summary = {
        arm.name: {
            "runs": arm.labels,
            "seeds": arm.seeds,
            "contexts": {
                context: {
                    metric: {"values": arm.values(context, metric), "mean": float(np.mean(arm.values(context, metric)))}
                    for metric in METRICS
                }
                for context in arm.rows
            },
        }
        for arm in arms
    }
    return "\n".join(text), {"arms": summary, "tests": tests}

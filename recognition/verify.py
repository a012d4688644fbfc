"""LFW verification of recognition checkpoints: align, embed, score pairs, run the protocol, write a report and ROC.

Alignment is the masking pipeline's (:class:`augmentor.faces.FaceMasker`, run through ``augmentor.preprocessing.preprocess`` so it
is parallel and cached in ``OUT/aligned/``) and the whole aligned crop is used. An image the pipeline cannot align
falls back to a centre crop and is counted in the report. Features are cached per model in ``OUT/features/``.

With ``contexts`` other than ``original`` (:mod:`recognition.contexts`), the same pairs are scored again with the
second image of every pair re-contexted (background blacked out by the face mask, or a donor's context, plainly or
seamlessly composed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from augmentor.errors import InputError
from recognition import lfw
from recognition.compare import REPORT_NAME
from recognition.contexts import (
    ORIGINAL,
    REFINE,
    ContextImages,
    load_donor_bank,
    make_context,
    needs_donors,
    path_fingerprint,
)
from recognition.data import resize_crop
from recognition.embedders import load_embedder
from recognition.features import AlignedImages, embed_all

log = logging.getLogger(__name__)


@dataclass
class VerifySettings:
    """How verify-lfw runs."""

    view: Literal["view2", "dev"] = "view2"  # view2: 10-fold pairs.txt; dev: View 1 pairsDevTest.txt
    train_pairs: str | None = None  # dev only: pairsDevTrain.txt, to choose the threshold on
    metric: lfw.Metric = "pearson"  # pearson (the paper) or cosine
    limit: int | None = None  # keep the first N matched and N mismatched pairs of each fold
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None  # alignment processes (default: all cores)
    flip: bool = False  # add the features of the mirrored crop
    fallback_fraction: float = 0.81  # centre crop side / image side for unaligned images (the template's LFW view)
    progress: bool = True
    contexts: tuple[str, ...] = (ORIGINAL,)  # recognition.contexts.CONTEXTS; original is always scored
    donors: str | None = None  # the donor bank, for the donor context


def centre_crop(image: np.ndarray, size: int, fraction: float) -> np.ndarray:
    """The central ``fraction`` of the shorter side, resized to ``size x size``."""
    height, width = image.shape[:2]
    side = max(1, round(min(height, width) * fraction))
    top, left = (height - side) // 2, (width - side) // 2
    return resize_crop(np.ascontiguousarray(image[top : top + side, left : left + side]), size)


def align_images(
    root: Path, names: list[str], cache_dir: Path, settings: VerifySettings, masking=None
) -> AlignedImages:
    """Align ``root/name`` for every name (cached in ``cache_dir`` as preprocess shards); centre-crop the failures."""
    from augmentor.faces import FaceError, MaskingConfig, load_image
    from augmentor.preprocessing.preprocess import preprocess
    from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

    masking = masking or MaskingConfig()
    listing = pd.DataFrame(
        {"image_id": names, "identity": [n.split("/")[0] for n in names], "path": [str(root / n) for n in names]}
    )
    preprocess(listing, cache_dir, masking=masking, workers=settings.workers, progress=settings.progress)
    columns = ["image_id", "source_path", "status", "reason", "aligned", "mask", "landmarks"]
    rows = {r["image_id"]: r for r in read_shards(cache_dir, columns=columns).to_pylist()}
    size = masking.template.size
    images = np.zeros((len(names), size, size, 3), np.uint8)
    masks = np.zeros((len(names), size, size), np.uint8)
    landmarks: list[np.ndarray | None] = []
    fallbacks: dict[str, str] = {}
    for i, name in enumerate(names):
        row = rows[name]
        if row["source_path"] != str(root / name):
            raise InputError(f"{cache_dir} caches {row['source_path']} for {name}, not {root / name}: use a new --out")
        if row["status"] == "ok":
            images[i] = decode_png(row["aligned"])
            masks[i] = decode_mask(row["mask"])
            landmarks.append(np.asarray(row["landmarks"], np.float32).reshape(68, 2))
            continue
        try:
            images[i] = centre_crop(load_image(root / name), size, settings.fallback_fraction)
        except FaceError as err:
            raise InputError(f"{root / name} cannot be read: {err.reason}") from err
        landmarks.append(None)
        fallbacks[name] = row["reason"]
    if fallbacks:
        log.warning("%d of %d images could not be aligned and use a centre crop", len(fallbacks), len(names))
    return AlignedImages(names, images, landmarks, fallbacks, masks)


# --------------------------------------------------------------------------------------------------- protocol


def _check_view(pairs: lfw.Pairs, view: str) -> None:
    if view == "view2" and pairs.num_folds < 2:
        raise InputError(f"{pairs.source} is a View 1 file (one set); pass --view dev")
    if view == "dev" and pairs.num_folds != 1:
        raise InputError(f"{pairs.source} is a View 2 file ({pairs.num_folds} folds); drop --view dev")


def run_protocol(
    features: np.ndarray,
    aligned: AlignedImages,
    pairs: lfw.Pairs,
    train: lfw.Pairs | None,
    settings: VerifySettings,
    right_features: np.ndarray | None = None,
) -> tuple[lfw.Verification, np.ndarray]:
    """The protocol's result and the test pairs' scores.

    ``right_features`` (``[N, D]``, rows in ``aligned.names`` order) score the second image of every pair instead
    of ``features``: the re-contexted images of ``--context``.
    """
    both = features if right_features is None else np.concatenate([features, right_features])
    offset = 0 if right_features is None else len(features)

    def scores_of(p: lfw.Pairs) -> np.ndarray:
        return lfw.pair_scores(both, aligned.index(p.left), aligned.index(p.right) + offset, settings.metric)

    scores = scores_of(pairs)
    if settings.view == "view2":
        result = lfw.kfold_verification(scores, pairs.same, pairs.fold)
    elif train is not None:
        result = lfw.fixed_threshold_verification(scores_of(train), train.same, scores, pairs.same)
    else:
        folds = lfw.cross_validation_folds(pairs.same)
        result = lfw.kfold_verification(
            scores, pairs.same, folds, threshold_source="10-fold stratified cross-validation on the test pairs"
        )
    return result, scores


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, lfw.Verification]], path: Path, title: str = "LFW verification ROC"
) -> Path:
    """Pooled ROC curves of several models on one log-FPR plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (scores, same, result) in curves.items():
        fpr, tpr, _ = lfw.roc(scores, same)
        label = f"{name} (acc {result.accuracy_mean:.4f}, TPR@0.01 {result.tpr_pooled['0.01']:.3f})"
        ax.step(np.maximum(fpr, 1e-4), tpr, where="post", label=label)
    for target in lfw.FPR_TARGETS:
        ax.axvline(target, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (pooled over all pairs)")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _make_contexts(
    aligned: AlignedImages, names: list[str], settings: VerifySettings, out: Path, bank
) -> dict[str, ContextImages]:
    """The re-contexted crops of ``names`` (the pairs' second images) for every context but ``original``."""
    index = aligned.index(tuple(names))
    landmarks = [aligned.landmarks[i] for i in index]
    contexts = {}
    for context in settings.contexts:
        if context == ORIGINAL:
            continue
        fingerprint = ""
        if context in REFINE:  # the bank's own id where it has one (it names its shards and settings)
            fingerprint = str(getattr(bank, "id", "") or path_fingerprint(settings.donors))
        contexts[context] = make_context(
            context,
            names,
            aligned.images[index],
            aligned.masks[index],
            landmarks,
            out / "contexts" / f"{context}.npz",
            bank=bank,
            bank_fingerprint=fingerprint,
        )
    return contexts


def _log_result(name: str, context: str, result: lfw.Verification) -> None:
    log.info(
        "%s [%s]: accuracy %.4f +- %.4f, TPR@FPR=0.01 %.4f (pooled)",
        name,
        context,
        result.accuracy_mean,
        result.accuracy_std,
        result.tpr_pooled["0.01"],
    )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def load_pairs(pairs_path: str | Path, settings: VerifySettings) -> tuple[lfw.Pairs, lfw.Pairs | None]:
    """The test pairs and, for ``--view dev`` with ``train_pairs``, the threshold pairs, both cut to ``limit``.

    Raises:
        FileNotFoundError, ValueError: see :func:`verify_lfw`.
    """
    pairs = lfw.read_pairs(pairs_path)
    _check_view(pairs, settings.view)
    train = None
    if settings.train_pairs:
        if settings.view != "dev":
            raise InputError("--train-pairs is for --view dev (View 2 chooses thresholds on the other folds)")
        train = lfw.read_pairs(settings.train_pairs)
        _check_view(train, "dev")
    if settings.limit:
        pairs = pairs.limit(settings.limit)
        train = train.limit(settings.limit) if train is not None else None
    return pairs, train


def image_names(root: Path, pairs: lfw.Pairs, train: lfw.Pairs | None) -> list[str]:
    """Every image the pairs name, sorted.

    Raises:
        FileNotFoundError: one is not under ``root``.
    """
    names = sorted(set(pairs.images()) | set(train.images() if train is not None else []))
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) named by the pairs are not under {root}, e.g. {', '.join(missing[:3])}"
        )
    return names


def second_images(pairs: lfw.Pairs, train: lfw.Pairs | None) -> list[str]:
    """The images scored second in a pair, sorted: the ones ``--context`` re-contexts."""
    return sorted(set(pairs.right) | set(train.right if train is not None else ()))


def new_report(pairs_path, root: Path, settings: VerifySettings, pairs: lfw.Pairs, aligned: AlignedImages) -> dict:
    """The report's header: inputs, settings and the alignment counts (models are added as they are scored)."""
    return {
        "pairs": str(pairs_path),
        "train_pairs": settings.train_pairs,
        "root": str(root),
        "settings": dataclasses.asdict(settings),
        "num_pairs": len(pairs),
        "num_images": len(aligned.names),
        "alignment": {
            "aligned": len(aligned.names) - len(aligned.fallbacks),
            "centre_crop_fallback": len(aligned.fallbacks),
            "fallback_images": aligned.fallbacks,
        },
        "tpr_note": "tpr_pooled: one ROC over all test pairs; tpr_fold_mean/std: one ROC per fold, then mean/std",
        "models": {},
    }


Curve = tuple[np.ndarray, np.ndarray, lfw.Verification]  # scores, same, result


def score_model(
    name: str,
    embedder,
    aligned: AlignedImages,
    pairs: lfw.Pairs,
    train: lfw.Pairs | None,
    contexts: dict[str, ContextImages],
    out: Path,
    settings: VerifySettings,
) -> tuple[dict, dict[str, Curve]]:
    """One model's report entry and its ROC curve per context (``original`` and every re-contexted set)."""
    features = embed_all(embedder, aligned, out / "features" / f"{_slug(name)}.npz", settings)
    result, scores = run_protocol(features, aligned, pairs, train, settings)
    curves = {ORIGINAL: (scores, pairs.same, result)}
    entry = {
        "feature_dim": int(features.shape[1]),
        "training": {k: embedder.config.get(k) for k in ("data", "epochs_trained", "best_val_loss", "init")},
        "architecture": embedder.config.get("architecture"),
        **dataclasses.asdict(result),
        "contexts": {},
    }
    _log_result(name, ORIGINAL, result)
    for context, images in contexts.items():
        right_index = aligned.index(tuple(images.names))
        view = AlignedImages(images.names, images.images, [aligned.landmarks[i] for i in right_index])
        cache = out / "features" / f"{_slug(name)}@{context}.npz"
        right = features.copy()  # only the rows of the second images are read
        right[right_index] = embed_all(embedder, view, cache, settings, images.key)
        result, scores = run_protocol(features, aligned, pairs, train, settings, right_features=right)
        curves[context] = (scores, pairs.same, result)
        entry["contexts"][context] = dataclasses.asdict(result)
        _log_result(name, context, result)
    return entry, curves


def write_report(report: dict, curves: dict[str, dict[str, Curve]], out: Path) -> None:
    """``roc.png`` (original context), ``roc-<context>.png`` and ``report.json`` (atomically, last)."""
    for context, context_curves in curves.items():
        suffix = "" if context == ORIGINAL else f"-{context}"
        plot_roc(context_curves, out / f"roc{suffix}.png", title=f"LFW verification ROC, context: {context}")
    tmp = out / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / REPORT_NAME)


def verify_lfw(
    models: dict[str, str | Path],
    root: str | Path,
    pairs_path: str | Path,
    out: str | Path,
    settings: VerifySettings | None = None,
    masking=None,
) -> dict:
    """Run the LFW protocol for every model (and context) and write ``report.json`` and the ROC plots to ``out``.

    Args:
        models: ``{label: model}``, a model being a checkpoint or run folder, ``"dlib"``, or an external recogniser
            (``onnx:FILE``, ``torchscript:FILE``, ``facenet:vggface2``: :mod:`recognition.embedders.spec`).
        root: The LFW images folder (``Name/Name_0001.jpg``).
        pairs_path: ``pairs.txt`` (View 2) or ``pairsDevTest.txt`` (``settings.view = "dev"``).
        out: Output folder; also holds the alignment and feature caches.
        settings: Protocol and runtime options.
        masking: :class:`augmentor.faces.MaskingConfig` of the alignment (default: the built-in one).

    Returns:
        The report (also in ``out/report.json``). ``models[name]`` holds the ``original`` context's numbers and,
        under ``contexts``, those of every other context; ``roc.png`` is the original context, ``roc-<context>.png``
        the others.

    Raises:
        FileNotFoundError: a pairs file, an image it names or a model file is missing.
        InputError: a malformed pairs file, one that does not fit the view, a context that cannot be made
            (:class:`recognition.contexts.ContextError`) or a model spec that cannot be used.
    """
    from augmentor.precision import pick_device

    settings = settings or VerifySettings()
    root, out = Path(root), Path(out)
    start = time.perf_counter()
    pairs, train = load_pairs(pairs_path, settings)
    bank = load_donor_bank(settings.donors) if needs_donors(settings.contexts) else None  # fail before aligning
    names = image_names(root, pairs, train)
    out.mkdir(parents=True, exist_ok=True)
    aligned = align_images(root, names, out / "aligned", settings, masking)
    device = pick_device(settings.device)
    report = new_report(pairs_path, root, settings, pairs, aligned)
    contexts = _make_contexts(aligned, second_images(pairs, train), settings, out, bank)
    report["contexts"] = {ORIGINAL: {"images": len(second_images(pairs, train)), "recontexted": 0}} | {
        c: images.summary() for c, images in contexts.items()
    }
    curves: dict[str, dict[str, Curve]] = {c: {} for c in (ORIGINAL, *contexts)}
    for name, spec in models.items():
        embedder = load_embedder(spec, device)
        entry, model_curves = score_model(name, embedder, aligned, pairs, train, contexts, out, settings)
        report["models"][name] = {"model": str(spec), **entry}
        for context, curve in model_curves.items():
            curves[context][name] = curve
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_report(report, curves, out)
    return report

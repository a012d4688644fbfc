"""``augmentor evaluate``: the paper's Table 1 on LFW for our models and classical baselines, in one run."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from augmentor.evaluation.baselines import BASELINES, fill_all
from augmentor.evaluation.scorer import Scorer
from augmentor.preprocessing.preprocess import preprocess
from augmentor.preprocessing.shards import decode_mask, decode_png, read_shards

__all__ = ["EvalSettings", "Scorer", "evaluate", "select", "select_reference"]

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """How an evaluation run samples, computes and reports."""

    limit: int | None = None  # evaluate N images drawn with `seed` (None: all)
    seed: int = 0  # image selection seed
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None  # masking processes (default: all cores)
    match_features: str = "dlib"  # dlib, or the path of a local torchvision ResNet-50 state dict
    inception_weights: str | None = None  # FID Inception weights file (pt_inception-2015-12-05-6726825d.pth)
    figure_rows: int = 8  # images in the comparison figure
    reference_size: int | None = None  # disjoint real images for FID/KID/SWD (None: as many as evaluated)
    precision: str = "fp32"  # the models' inference precision: fp32, bf16, or auto (bf16 on CUDA)
    num_bootstrap: int = 1000  # paired bootstrap resamples of the per-image, FID and KID differences
    swd_bootstrap: int = 100  # resamples of the SWD differences (each sorts every set's projections)
    swd_projections: int = 512  # SWD directions (ProGAN: 4 x 128)
    swd_bootstrap_projections: int = 64  # directions of the SWD bootstrap
    chip_identity: bool = False  # dlib L2 and same-person share on dlib's face chips (one more dlib pass per set)
    donors: str | None = None  # a preprocess folder or saved donor bank: adds the nearest-donor context row


DONOR = "nearest-donor context"  # the row of augmentor.donors: the context of the nearest real face of another person


def select(table: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A deterministic sample of ``limit`` rows (all rows if None), in listing order."""
    if limit is None or limit >= len(table):
        return table
    index = np.sort(np.random.default_rng(seed).choice(len(table), size=limit, replace=False))
    return table.iloc[index]


def select_reference(table: pd.DataFrame, chosen: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """``size`` rows not in ``chosen`` (by ``image_id``), drawn with ``seed + 1``: the disjoint real set."""
    rest = table[~table["image_id"].isin(set(chosen["image_id"]))]
    return select(rest, size, seed + 1)


def load_masked(shard_dir: Path) -> pd.DataFrame:
    columns = ["image_id", "identity", "aligned", "mask", "landmarks"]
    table = read_shards(shard_dir, columns=columns, status="ok").to_pandas()
    return table.sort_values("image_id", kind="stable").reset_index(drop=True)


def _faces(masked: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    return masked[masked["image_id"].isin(set(ids))].reset_index(drop=True)


def hallucinate(
    models: dict[str, str | Path],
    masked: np.ndarray,
    masks: np.ndarray,
    settings: EvalSettings,
    device,
    landmarks: np.ndarray | None = None,
    identities: list[str] | None = None,
):
    """Every baseline's, model's and (with ``settings.donors``) the donor method's fill of ``masked``:
    ``{name: uint8 [N, S, S, 3]}``."""
    from tqdm import tqdm

    from augmentor.hallucinator import Hallucinator

    outputs: dict[str, np.ndarray] = {}
    for name, fill in tqdm(BASELINES.items(), desc="baselines", unit="method"):
        outputs[name] = fill_all(fill, masked, masks)
    if settings.donors is not None:
        from augmentor.donors import DonorBank

        if landmarks is None:
            raise ValueError("the donor row needs the faces' landmarks")
        bank = DonorBank.load(settings.donors)
        results = bank.recontext(masked, masks, landmarks, identities, k=1)
        outputs[DONOR] = np.stack([copies[0].image for copies in results])
    for name, path in models.items():
        hal = Hallucinator.from_pretrained(
            path, device=str(device), batch_size=settings.batch_size, precision=settings.precision
        )
        outputs[name] = np.concatenate(
            [
                hal(masked[i : i + 256], masks[i : i + 256])
                for i in tqdm(range(0, len(masked), 256), desc=name, unit="batch")
            ]
        )
    return outputs


REAL = "real (held-out originals)"  # the floor row: the originals themselves scored against the reference set


def evaluate(table: pd.DataFrame, out_dir: str | Path, models: dict[str, str | Path], settings: EvalSettings) -> dict:
    """Mask, hallucinate and score; write table.md, metrics.json, per_image.parquet and figures to ``out_dir``.

    Per-image metrics compare each output with its own original; FID-face, KID-face and SWD compare each set with
    a disjoint set of real LFW images, and the originals against that set give the real-vs-real floor. Every
    model-minus-best-baseline difference gets a paired bootstrap 95% CI.

    Args:
        table: Dataset listing (``image_id``, ``identity``, ``path``).
        out_dir: Output folder (masking shards are kept in ``out_dir/masked`` and reused by a rerun).
        models: ``{label: checkpoint folder}``.
        settings: Sampling and metric settings.

    Returns:
        The ``metrics.json`` content.
    """
    from tqdm import tqdm

    from augmentor.evaluation.intervals import per_image_differences, set_differences, swd_differences
    from augmentor.evaluation.report import write_reports
    from augmentor.evaluation.stats import bootstrap_counts
    from augmentor.evaluation.swd import describe_levels, project_levels, swd_between
    from augmentor.precision import pick_device

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    chosen = select(table, settings.limit, settings.seed)
    reference_rows = select_reference(table, chosen, settings.reference_size or len(chosen), settings.seed)
    if len(reference_rows) < 2:
        raise ValueError(f"only {len(reference_rows)} images are left for the disjoint real set; need at least 2")
    listing = pd.concat([chosen, reference_rows])[["image_id", "identity", "path"]]
    masking = preprocess(listing, out_dir / "masked", workers=settings.workers)
    everything = load_masked(out_dir / "masked")
    faces, reference = _faces(everything, chosen["image_id"]), _faces(everything, reference_rows["image_id"])
    if len(faces) < 2 or len(reference) < 2:
        raise ValueError(f"only {len(faces)} + {len(reference)} faces could be masked; need at least 2 of each")
    originals = np.stack([decode_png(b) for b in faces["aligned"]])  # [N, S, S, 3]
    masks = np.stack([decode_mask(b) for b in faces["mask"]])  # [N, S, S]
    landmarks = np.stack([np.asarray(p, np.float32).reshape(68, 2) for p in faces["landmarks"]])  # [N, 68, 2]
    real = np.stack([decode_png(b) for b in reference["aligned"]])  # [M, S, S, 3], disjoint from the originals
    masked = originals * masks[..., None]
    identities = [str(i) for i in faces["identity"]]
    outputs = hallucinate(models, masked, masks, settings, device, landmarks, identities)

    scorer = Scorer(originals, settings, device, masks=masks, landmarks=landmarks, reference=real)
    swd_options = {"num_projections": settings.swd_projections, "seed": settings.seed}
    # two streams: the reference set's neighbourhoods, and one set of neighbourhood positions shared by every
    # method (common random numbers: two methods' SWDs differ by their pixels, not by where the patches fell)
    seeds = np.random.SeedSequence(settings.seed).spawn(2)
    real_levels = describe_levels(real, np.random.default_rng(seeds[0]))
    real_proj = project_levels(real_levels, len(real), num_projections=settings.swd_bootstrap_projections)
    rows, summary, scores, features, projections = [], {}, {}, {}, {}
    for name, images in tqdm([*outputs.items(), (REAL, originals)], desc="scoring", unit="set"):
        if name != REAL:
            scores[name] = scorer.per_image(images)
            rows.append(pd.DataFrame({"method": name, "image_id": faces["image_id"], **scores[name]}))
        features[name] = scorer.face_features(images)
        summary[name] = {f"mean_{m}": float(np.nanmean(v)) for m, v in scores.get(name, {}).items()}
        summary[name].update(scorer.set_level(images, features[name]))
        levels = describe_levels(images, np.random.default_rng(seeds[1]))
        summary[name].update({f"swd_{r}": v for r, v in swd_between(real_levels, levels, **swd_options).items()})
        projections[name] = project_levels(levels, len(images), num_projections=settings.swd_bootstrap_projections)
        del levels

    baselines = [b for b in BASELINES if b in outputs]
    counts = bootstrap_counts(len(originals), settings.num_bootstrap, settings.seed)
    ref_counts = bootstrap_counts(len(real), settings.num_bootstrap, settings.seed + 1)
    kernels = {}

    def kernel_of(name: str):
        if name not in kernels:
            kernels[name] = scorer.kernels(features[name])
        return kernels[name]

    def differences_of(name: str, against: list[str]) -> list:
        """Every metric of ``name`` minus the best of ``against``, with its CI."""
        return [
            *per_image_differences(name, scores, against, counts),
            *set_differences(
                name, summary, against, features, scorer.reference_feats, kernel_of, scorer.k_rr, counts, ref_counts
            ),
            *swd_differences(name, summary, against, projections, real_proj, settings.swd_bootstrap, settings.seed),
        ]

    names = list(models)
    differences = [d for name in names for d in differences_of(name, baselines)]
    # with several models, each later one against the first (e.g. a candidate against the shipped model)
    model_differences = [d for name in names[1:] for d in differences_of(name, names[:1])]
    per_image = pd.concat(rows, ignore_index=True)
    per_image.to_parquet(out_dir / "per_image.parquet", index=False)
    report = {
        "settings": asdict(settings),
        "device": str(device),
        "precision": settings.precision,
        "images_requested": len(chosen),
        "images_scored": len(faces),
        "reference_requested": len(reference_rows),
        "reference_images": len(reference),
        "feature_dim": int(features[REAL].shape[1]),
        "masking": masking.status_counts,
        "match_features": scorer.match_net.name,
        "models": {k: str(v) for k, v in models.items()},
        "baselines": baselines,
        "unavailable": {k: v for k, v in scorer.notes.items() if v.startswith("not available")},
        "methods": summary,
        "differences": [{**asdict(d), "verdict": d.verdict} for d in differences],
        "model_differences": [{**asdict(d), "verdict": d.verdict} for d in model_differences],
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    write_reports(report, per_image, masked, outputs, originals, out_dir, settings.figure_rows)
    return report

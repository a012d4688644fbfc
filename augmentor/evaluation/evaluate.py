"""``augmentor evaluate``: the paper's Table 1 on LFW for our models and classical baselines, in one run, with
realism judged by SWD in two normalisations, seam SWD, a classifier two-sample test, and the diversity of copies."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmentor.errors import InputError
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
    reference_size: int | None = None  # disjoint real images for FID/KID/SWD/C2ST (None: as many as evaluated)
    precision: str = "fp32"  # the models' inference precision: fp32, bf16, or auto (bf16 on CUDA)
    num_bootstrap: int = 1000  # paired bootstrap resamples of the per-image, FID and KID differences
    swd_bootstrap: int = 100  # resamples of the SWD differences (each sorts every set's projections)
    swd_projections: int = 512  # SWD directions (ProGAN: 4 x 128)
    swd_bootstrap_projections: int = 64  # directions of the SWD bootstrap
    chip_identity: bool = False  # dlib L2 and same-person share on dlib's face chips (one more dlib pass per set)
    donors: str | None = None  # a preprocess folder or saved donor bank for the donor rows (None: see donor_pool)
    donor_pool: int = 2000  # without `donors`: images of the dataset's other identities preprocessed as donors (0: none)
    donor_refine: bool = True  # also score the refined (seamless) donor composition beside the plain one
    copies: int = 1  # copies per face of the models and donor rows; >= 2 also measures their diversity
    c2st_seeds: tuple[int, ...] = (0, 1, 2)  # classifier two-sample test seeds (empty: no C2ST)
    c2st_regions: tuple[str, ...] = ("whole", "jaw", "forehead")  # regions the C2ST judges
    c2st_skip: tuple[str, ...] = ("black mask", "mean-colour fill")  # flat fills any judge catches: not trained on
    c2st_min_images: int = 20  # fewer evaluated or reference images than this: no C2ST (nothing to learn from)


DONOR = "nearest-donor context"  # the row of augmentor.donors: the context of the nearest real face of another person
DONOR_REFINED = "nearest-donor context (refined)"  # the same donors with the seamless composition
REAL = "real (held-out originals)"  # the floor row: the originals themselves scored against the reference set


@dataclass
class FaceSet:
    """Aligned faces with their masks, landmarks and identities."""

    image_ids: pd.Series
    images: np.ndarray  # [N, S, S, 3] uint8
    masks: np.ndarray  # [N, S, S] {0, 1}
    landmarks: np.ndarray  # [N, 68, 2] float32
    identities: np.ndarray  # [N] str

    @classmethod
    def from_shards(cls, table: pd.DataFrame) -> FaceSet:
        return cls(
            table["image_id"],
            np.stack([decode_png(b) for b in table["aligned"]]),
            np.stack([decode_mask(b) for b in table["mask"]]),
            np.stack([np.asarray(p, np.float32).reshape(68, 2) for p in table["landmarks"]]),
            np.asarray([str(i) for i in table["identity"]], dtype=str),
        )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def masked(self) -> np.ndarray:
        return self.images * self.masks[..., None]


@dataclass
class Outputs:
    """Every method's fill: copy 0 of each, and the other copies of the methods that make distinct ones."""

    first: dict[str, np.ndarray] = field(default_factory=dict)  # {name: [N, S, S, 3]}
    more: dict[str, np.ndarray] = field(default_factory=dict)  # {name: [K - 1, N, S, S, 3]}

    def copies(self, name: str) -> np.ndarray:
        """``[K, N, S, S, 3]``: copy 0 and the others."""
        rest = self.more.get(name)
        return self.first[name][None] if rest is None else np.concatenate([self.first[name][None], rest])


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


def select_donors(table: pd.DataFrame, used: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """Up to ``size`` rows whose identity is in none of ``used``'s rows, drawn with ``seed + 2``: the donor pool
    (donors from the evaluated dataset, never sharing an identity with an evaluated or reference face)."""
    rest = table[~table["identity"].astype(str).isin(set(used["identity"].astype(str)))]
    return select(rest, size, seed + 2)


def load_masked(shard_dir: Path) -> pd.DataFrame:
    columns = ["image_id", "identity", "aligned", "mask", "landmarks"]
    table = read_shards(shard_dir, columns=columns, status="ok").to_pandas()
    return table.sort_values("image_id", kind="stable").reset_index(drop=True)


def _faces(masked: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    return masked[masked["image_id"].isin(set(ids))].reset_index(drop=True)


def prepare(table: pd.DataFrame, out_dir: Path, settings: EvalSettings) -> tuple[FaceSet, FaceSet, dict, str | None]:
    """Choose, mask and decode the evaluated faces and the disjoint reference set; find or build the donor pool.

    Returns:
        ``(faces, reference, masking status counts, donor folder or None)``.
    """
    chosen = select(table, settings.limit, settings.seed)
    reference_rows = select_reference(table, chosen, settings.reference_size or len(chosen), settings.seed)
    if len(reference_rows) < 2:
        raise InputError(f"only {len(reference_rows)} images are left for the disjoint real set; need at least 2")
    listing = pd.concat([chosen, reference_rows])[["image_id", "identity", "path"]]
    masking = preprocess(listing, out_dir / "masked", workers=settings.workers)
    everything = load_masked(out_dir / "masked")
    faces = FaceSet.from_shards(_faces(everything, chosen["image_id"]))
    reference = FaceSet.from_shards(_faces(everything, reference_rows["image_id"]))
    if len(faces) < 2 or len(reference) < 2:
        raise InputError(f"only {len(faces)} + {len(reference)} faces could be masked; need at least 2 of each")
    donors = settings.donors
    if donors is None and settings.donor_pool > 0:
        pool = select_donors(table, listing, settings.donor_pool, settings.seed)
        if len(pool):
            log.info("donor pool: %d images of the dataset's other identities", len(pool))
            preprocess(pool[["image_id", "identity", "path"]], out_dir / "donors", workers=settings.workers)
            donors = str(out_dir / "donors")
        else:
            log.warning("no image of another identity is left for the donor rows; they are skipped")
    return faces, reference, masking.status_counts, donors


def hallucinate_models(
    models: dict[str, str | Path], faces: FaceSet, settings: EvalSettings, device, outputs: Outputs
) -> dict[str, str]:
    """Each model's ``settings.copies`` fills of ``faces``; copy ``k`` of image ``i`` uses noise seed ``k * N + i``.

    Returns:
        ``{model: the precision it ran in}`` (``auto`` resolved).
    """
    from tqdm import tqdm

    from augmentor.hallucinator import Hallucinator

    masked, n = faces.masked, len(faces)
    precisions = {}
    for name, path in models.items():
        hal = Hallucinator.from_pretrained(
            path, device=str(device), batch_size=settings.batch_size, precision=settings.precision
        )
        copies = []
        for k in range(settings.copies):
            parts = []
            for i in tqdm(range(0, n, 256), desc=f"{name} copy {k}", unit="batch"):
                part = slice(i, min(i + 256, n))
                parts.append(hal(masked[part], faces.masks[part], seeds=range(k * n + part.start, k * n + part.stop)))
            copies.append(np.concatenate(parts))
        outputs.first[name] = copies[0]
        if len(copies) > 1:
            outputs.more[name] = np.stack(copies[1:])
        precisions[name] = hal.precision
    return precisions


def hallucinate_donors(donors: str, faces: FaceSet, settings: EvalSettings, outputs: Outputs) -> int:
    """The donor rows (plain and, with ``settings.donor_refine``, refined): each face in its ``settings.copies``
    nearest donors' contexts, never of its own identity. Returns the bank's size."""
    from augmentor.donors import DonorBank

    bank = DonorBank.load(donors)
    variants = {DONOR: False, **({DONOR_REFINED: True} if settings.donor_refine else {})}
    for name, refine in variants.items():
        results = bank.recontext(
            faces.images, faces.masks, faces.landmarks, list(faces.identities), k=settings.copies, refine=refine
        )
        copies = np.stack([np.stack([r[k].image for r in results]) for k in range(settings.copies)])
        outputs.first[name] = copies[0]
        if settings.copies > 1:
            outputs.more[name] = copies[1:]
    return len(bank)


def hallucinate(models, faces: FaceSet, donors: str | None, settings: EvalSettings, device) -> tuple[Outputs, dict]:
    """Every baseline's, model's and donor row's fill of ``faces``, and notes on how they were made."""
    from tqdm import tqdm

    outputs, notes = Outputs(), {}
    for name, fill in tqdm(BASELINES.items(), desc="baselines", unit="method"):
        outputs.first[name] = fill_all(fill, faces.masked, faces.masks)
    if donors is not None:
        notes["donors"] = {"source": donors, "bank_size": hallucinate_donors(donors, faces, settings, outputs)}
    notes["precision_resolved"] = hallucinate_models(models, faces, settings, device, outputs)
    return outputs, notes


@dataclass
class Scores:
    """Everything measured of every set."""

    per_image: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # {name: {metric: [N]}}
    summary: dict[str, dict[str, float]] = field(default_factory=dict)  # {name: {metric: value}}
    features: dict[str, np.ndarray] = field(default_factory=dict)  # {name: [N, 128]} dlib descriptors
    projections: dict[str, dict[str, dict]] = field(default_factory=dict)  # {name: {swd variant: projections}}
    c2st: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # {name: {region: [accuracy per seed]}}
    c2st_seconds: dict[str, float] = field(default_factory=dict)  # {name: seconds of its judges}
    reference_projections: dict[str, dict] = field(default_factory=dict)  # {swd variant: the reference's projections}


def score_sets(outputs: Outputs, faces: FaceSet, reference: FaceSet, scorer: Scorer, settings: EvalSettings) -> Scores:
    """Per-image metrics against the originals; FID/KID, SWD (every variant) and C2ST against the reference set."""
    from tqdm import tqdm

    from augmentor.evaluation.c2st import C2STConfig
    from augmentor.evaluation.realism import C2STJudge, SwdJudge

    swd = SwdJudge(
        reference.images, reference.masks, settings.seed, settings.swd_projections, settings.swd_bootstrap_projections
    )
    judge = None
    if settings.c2st_seeds and min(len(faces), len(reference)) < settings.c2st_min_images:
        log.warning("no C2ST: %d + %d images, under %d", len(faces), len(reference), settings.c2st_min_images)
    elif settings.c2st_seeds:
        config = C2STConfig(seeds=tuple(settings.c2st_seeds))
        judge = C2STJudge(reference.images, reference.masks, reference.identities, settings.c2st_regions, config)
    scores = Scores()
    for name, images in tqdm([*outputs.first.items(), (REAL, faces.images)], desc="scoring", unit="set"):
        features = scorer.original if name == REAL else scorer.features(images)  # one dlib pass per set
        if name != REAL:
            scores.per_image[name] = scorer.per_image(images, features)
        scores.features[name] = features.as_numpy()
        summary = {f"mean_{m}": v for m, v in scores_mean(scores.per_image.get(name, {})).items()}
        summary.update(scorer.set_level(images, features))
        values, scores.projections[name] = swd.score(images, faces.masks)
        summary.update(values)
        if judge is not None and name not in settings.c2st_skip:
            start = time.perf_counter()
            judged = judge.score(images, faces.masks, faces.identities)
            scores.c2st[name] = {region: result.accuracies for region, result in judged.items()}
            scores.c2st_seconds[name] = round(time.perf_counter() - start, 1)
            summary.update({f"c2st_{region}": result.mean for region, result in judged.items()})
        scores.summary[name] = summary
    scores.reference_projections = swd.reference_projections
    return scores


def score_copies(outputs: Outputs, faces: FaceSet, scorer: Scorer, scores: Scores) -> dict[str, dict]:
    """For each method with several copies: their diversity over the context, and the per-image metrics of every
    copy (not only copy 0; copy 0's are the ones :func:`score_sets` measured)."""
    from augmentor.evaluation.diversity import pairwise_context_difference, pairwise_descriptor_distance

    result = {}
    for name in outputs.more:
        copies = outputs.copies(name)
        grey = pairwise_context_difference(copies, faces.masks)
        descriptor = pairwise_descriptor_distance(copies, faces.masks, scorer.describe)
        per_copy = [scores_mean(scores.per_image[name])]
        per_copy += [scores_mean(scorer.per_image(copy)) for copy in outputs.more[name]]
        result[name] = {
            "copies": len(copies),
            "context_grey_difference": float(grey.mean()),
            "context_grey_difference_p90": float(np.percentile(grey, 90)),
            "context_descriptor_distance": float(descriptor.mean()),
            "per_copy": per_copy,
        }
    return result


def scores_mean(scores: dict[str, np.ndarray]) -> dict[str, float]:
    return {m: float(np.nanmean(v)) for m, v in scores.items()}


def differences(
    scores: Scores, scorer: Scorer, pairs: list[tuple[str, list[str]]], settings: EvalSettings, n: int, n_ref: int
) -> list:
    """For each ``(name, against)``: every metric of ``name`` minus the best of ``against``, with its paired CI."""
    from augmentor.evaluation.intervals import (
        c2st_differences,
        per_image_differences,
        set_differences,
        swd_differences,
    )
    from augmentor.evaluation.realism import SWD_VARIANTS
    from augmentor.evaluation.stats import bootstrap_counts

    counts = bootstrap_counts(n, settings.num_bootstrap, settings.seed)
    ref_counts = bootstrap_counts(n_ref, settings.num_bootstrap, settings.seed + 1)
    kernels: dict = {}

    def kernel_of(name: str):
        if name not in kernels:
            kernels[name] = scorer.kernels(scores.features[name])
        return kernels[name]

    found = []
    for name, against in pairs:
        found += per_image_differences(name, scores.per_image, against, counts)
        found += set_differences(
            name, scores.summary, against, scores.features, scorer.reference_feats, kernel_of, scorer.k_rr, counts,
            ref_counts,
        )
        for prefix in SWD_VARIANTS:
            projections = {m: scores.projections[m][prefix] for m in [name, *against]}
            found += swd_differences(
                name, scores.summary, against, projections, scores.reference_projections[prefix],
                settings.swd_bootstrap, settings.seed, prefix,
            )
        if scores.c2st:
            found += c2st_differences(name, scores.c2st, against)
    return found


def comparisons(models: dict, outputs: Outputs) -> tuple[list, list]:
    """``(ours against the baselines, ours against each other)``: each model and donor row against the best
    baseline; each later model against the first; the refined donor row against the plain one."""
    baselines = [b for b in BASELINES if b in outputs.first]
    ours = [name for name in outputs.first if name not in BASELINES]
    against_baselines = [(name, baselines) for name in ours]
    names = list(models)
    between = [(name, names[:1]) for name in names[1:]]
    if DONOR_REFINED in outputs.first and DONOR in outputs.first:
        between.append((DONOR_REFINED, [DONOR]))
    return against_baselines, between


def build_report(
    settings, table, device, faces, reference, masking, models, outputs, notes, scorer, scores, copies, found,
    found_between, seconds,
) -> dict:
    """The ``metrics.json`` content of one run."""
    return {
        "settings": asdict(settings),
        "device": str(device),
        "precision": settings.precision,
        "images_scored": len(faces),
        "reference_images": len(reference),
        "images_requested": min(settings.limit or len(table), len(table)),
        "reference_requested": min(
            settings.reference_size or settings.limit or len(table), len(table) - min(settings.limit or 0, len(table))
        ),
        "feature_dim": int(scores.features[REAL].shape[1]),
        "masking": masking,
        "match_features": scorer.match_net.name,
        "models": {k: str(v) for k, v in models.items()},
        "baselines": [b for b in BASELINES if b in outputs.first],
        "unavailable": {k: v for k, v in scorer.notes.items() if v.startswith("not available")},
        "methods": scores.summary,
        "c2st": {"accuracies": scores.c2st, "seconds": scores.c2st_seconds},
        "copies": copies,
        **notes,
        "differences": [{**asdict(d), "verdict": d.verdict} for d in found],
        "model_differences": [{**asdict(d), "verdict": d.verdict} for d in found_between],
        "seconds": round(seconds, 1),
    }


def evaluate(table: pd.DataFrame, out_dir: str | Path, models: dict[str, str | Path], settings: EvalSettings) -> dict:
    """Mask, hallucinate and score; write table.md, metrics.json, per_image.parquet and figures to ``out_dir``.

    Per-image metrics compare each output with its own original; FID-face, KID-face, SWD and the C2ST compare each
    set with a disjoint set of real images of the same dataset, and the originals against that set give the
    real-vs-real floor. Every difference gets a paired CI (bootstrap over images; over seeds for the C2ST).

    Args:
        table: Dataset listing (``image_id``, ``identity``, ``path``).
        out_dir: Output folder (masking shards are kept in ``out_dir/masked`` and ``out_dir/donors`` and reused by a
            rerun).
        models: ``{label: checkpoint folder}``.
        settings: Sampling and metric settings.

    Returns:
        The ``metrics.json`` content.
    """
    from augmentor.evaluation.report import write_reports
    from augmentor.precision import pick_device

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    faces, reference, masking, donors = prepare(table, out_dir, settings)
    outputs, notes = hallucinate(models, faces, donors, settings, device)
    scorer = Scorer(faces.images, settings, device, masks=faces.masks, landmarks=faces.landmarks, reference=reference.images)
    scores = score_sets(outputs, faces, reference, scorer, settings)
    copies = score_copies(outputs, faces, scorer, scores)
    against_baselines, between = comparisons(models, outputs)
    found = differences(scores, scorer, against_baselines, settings, len(faces), len(reference))
    found_between = differences(scores, scorer, between, settings, len(faces), len(reference))
    per_image = pd.concat(
        [pd.DataFrame({"method": name, "image_id": faces.image_ids, **s}) for name, s in scores.per_image.items()],
        ignore_index=True,
    )
    per_image.to_parquet(out_dir / "per_image.parquet", index=False)
    report = build_report(
        settings, table, device, faces, reference, masking, models, outputs, notes, scorer, scores, copies,
        found, found_between, time.perf_counter() - start,
    )
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    write_reports(report, per_image, faces.masked, outputs.first, faces.images, out_dir, settings.figure_rows)
    return report

"""Choose regime (a)'s fine-tuning recipe on CelebA, never on LFW (issue 25, item 4).

Issue 17's fine-tuned dlib-resnet models all scored below the untouched dlib port on LFW, so an arm comparison in
regime (a) measured damaged networks. This script holds out whole identities of the real training crops, fine-tunes
each candidate recipe on the rest, and scores face verification on pairs of the held-out identities, next to the
untouched dlib port (dlib's own chips from the landmarks) and the recipe's network before any step (``step 0``). A
recipe is kept only if it is not below the untouched port there.

Steps (each skipped when its output exists, so a rerun resumes):

1. split the identities of ``--manifest`` (preprocess outputs) into training and held-out (``--holdout``, seeded);
2. write the training identities' rows to ``OUT/train/<n>/part-00000.parquet`` (same columns);
3. ``augmentor finetune`` every ``--recipe`` x ``--seeds`` on them into ``OUT/runs/<recipe>-s<seed>/``;
4. pairs of the held-out faces: up to ``--pairs-per-identity`` matched pairs per identity, as many mismatched;
5. embed, score (Pearson), 10-fold accuracy, pooled TPR at FPR 0.01 and 0.001, AUC, and each model minus the
   untouched port with a bootstrap CI over identities: printed as a table and saved as JSON.

    python benchmarks/regime_recipe.py --out /root/runs/recipe \\
        --manifest /root/runs/rec-grid-v3/data/real-celeba --manifest /root/runs/rec-grid-v3/data/real-celeba-extra \\
        --recipe issue17= --recipe dlib-layer=model.embedding=pretrained,model.embedding_dim=128
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from recognition_grid import ROOT, _augmentor, finished, run_folder
from record import write_record

from augmentor.options import int_option
from augmentor.preprocessing.shards import decode_png, read_shards
from recognition.features import AlignedImages, DlibEmbedder, embed_all, load_embedder
from recognition.lfw import auc, cross_validation_folds, kfold_verification, pair_scores

log = logging.getLogger("regime_recipe")

BASE_CONFIG = ROOT / "configs" / "recognition" / "grid-pretrained.yaml"
STEP0 = "step 0"  # suffix of a recipe's untrained network in the table
DLIB = "dlib port (untouched)"
METRICS = ("accuracy", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "auc")


@dataclass
class HeldOut:
    """The held-out faces and the verification pairs between them."""

    faces: AlignedImages  # the crops (named by image_id) and their [68, 2] aligned landmarks
    identities: np.ndarray  # [N] identity strings
    left: np.ndarray  # [P] image index
    right: np.ndarray  # [P]
    same: np.ndarray  # [P] bool


def read_manifests(manifests: list[Path]) -> list[pa.Table]:
    """Every manifest's shards, read once (all columns: the training shards keep them all)."""
    try:
        return [read_shards(m) for m in manifests]
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="--manifest") from None


def identities_of(tables: list[pa.Table]) -> list[str]:
    found: set[str] = set()
    for table in tables:
        found.update(table.filter(pc.equal(table["status"], "ok"))["identity"].to_pylist())
    return sorted(found)


def split_identities(identities: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of the identities, held out from fine-tuning."""
    rng = np.random.default_rng(seed)
    count = max(2, round(fraction * len(identities)))
    return set(rng.choice(np.array(identities), size=count, replace=False).tolist())


def write_training_shards(manifests: list[Path], tables: list[pa.Table], heldout: set[str], out: Path) -> list[Path]:
    """Every manifest's rows of the training identities, one shard per manifest (skipped when written)."""
    written = []
    for n, (manifest, table) in enumerate(zip(manifests, tables)):
        folder = out / "train" / f"{n}-{manifest.name}"
        target = folder / "part-00000.parquet"
        if not target.is_file():
            keep = pc.invert(pc.is_in(table["identity"], value_set=pa.array(sorted(heldout))))
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.filter(keep), folder / "part-00000.parquet.tmp")
            (folder / "part-00000.parquet.tmp").rename(target)
        written.append(folder)
    return written


def heldout_faces(tables: list[pa.Table], heldout: set[str], per_identity: int, ratio: int, seed: int) -> HeldOut:
    """The held-out identities' ok crops, with matched pairs (up to ``per_identity`` per identity, drawn with the
    seed) and ``ratio`` times as many mismatched pairs (two different held-out identities), so that a TPR at a low
    FPR rests on enough mismatched pairs."""
    ids, images, landmarks, names = [], [], [], []
    for table in tables:
        keep = pc.and_(
            pc.equal(table["status"], "ok"), pc.is_in(table["identity"], value_set=pa.array(sorted(heldout)))
        )
        for row in table.select(["image_id", "identity", "aligned", "landmarks"]).filter(keep).to_pylist():
            ids.append(row["image_id"])
            images.append(decode_png(row["aligned"]))
            landmarks.append(np.asarray(row["landmarks"], np.float32).reshape(68, 2))
            names.append(row["identity"])
    identities = np.array(names)
    rng = np.random.default_rng(seed)
    matched = []
    for name in sorted(set(names)):
        members = np.flatnonzero(identities == name)
        combos = list(itertools.combinations(members.tolist(), 2))
        picked = rng.permutation(len(combos))[:per_identity]
        matched += [combos[i] for i in picked]
    counts = np.unique(identities, return_counts=True)[1]
    possible = (len(names) * (len(names) - 1) - int((counts * (counts - 1)).sum())) // 2
    wanted = min(ratio * len(matched), possible)
    if wanted < ratio * len(matched):
        log.warning("only %d mismatched pairs exist; using all of them", possible)
    mismatched: set[tuple[int, int]] = set()
    while len(mismatched) < wanted:
        a, b = rng.integers(0, len(names), size=2)
        if identities[a] != identities[b]:
            mismatched.add((int(min(a, b)), int(max(a, b))))
    pairs = np.array(matched + sorted(mismatched), np.int64)
    same = np.r_[np.ones(len(matched), bool), np.zeros(len(mismatched), bool)]
    faces = AlignedImages(ids, np.stack(images), landmarks)
    return HeldOut(faces, identities, pairs[:, 0], pairs[:, 1], same)


def finetune_recipes(recipes: dict[str, list[str]], seeds: tuple[int, ...], train: list[Path], out: Path) -> dict:
    """Fine-tune every recipe x seed (skipping finished runs); ``{label: run folder}``."""
    runs = {}
    for (name, sets), seed in itertools.product(recipes.items(), seeds):
        root = out / "runs" / f"{name}-s{seed}"
        if not finished(run_folder(root)):
            command = [_augmentor(), "finetune", *[a for m in train for a in ("--manifest", str(m))]]
            command += ["--config", str(BASE_CONFIG), "--set", f"seed={seed}", "--device", "cpu"]
            command += [a for s in sets for a in ("--set", s)] + ["--out", str(root), "--no-progress"]
            log.info("fine-tune %s-s%d: %s", name, seed, " ".join(command))
            start = time.perf_counter()
            subprocess.run(command, check=True)
            log.info("fine-tune %s-s%d: %.0f s", name, seed, time.perf_counter() - start)
        runs[f"{name}-s{seed}"] = run_folder(root)
    return runs


def embed(embedder, held: HeldOut, cache: Path) -> np.ndarray:
    """Embeddings of the held-out faces, each the sum over the crop and its mirror image (as verify-lfw), cached
    in ``cache`` with verify-lfw's feature cache (a rerun with the same models and faces reads them back)."""
    from recognition.verify import VerifySettings

    return embed_all(embedder, held.faces, cache, VerifySettings(flip=True, progress=False))


def step0_checkpoint(run: Path, out: Path) -> Path:
    """The run's network before any step (its architecture, initialised from its ``init`` with the run's seed),
    saved as a checkpoint. With a fresh embedding layer that layer is random, so its row is a random projection of
    the trunk's features; with ``model.embedding: pretrained`` it is the dlib descriptor of the template chip."""
    from recognition.backbone import NetConfig, RecognitionNet, load_init, save_model

    config = json.loads((run / "finetune_config.json").read_text())
    torch.manual_seed(config["seed"])
    net_config = NetConfig(**{**config["model"], "image_size": config["data"]["image_size"], "num_classes": 2})
    net = RecognitionNet(net_config).eval()
    load_init(net, config["init"])
    return save_model(net, out, {"note": "not fine-tuned: the initialisation of " + str(run)})


def score(features: np.ndarray, faces: HeldOut, seed: int) -> tuple[dict, np.ndarray]:
    scores = pair_scores(features, faces.left, faces.right)
    folds = cross_validation_folds(faces.same, 10, seed)
    result = kfold_verification(scores, faces.same, folds)
    metrics = {
        "accuracy": float(np.mean(result.fold_accuracy)),
        "tpr_at_fpr_0.01": float(result.tpr_pooled["0.01"]),
        "tpr_at_fpr_0.001": float(result.tpr_pooled["0.001"]),
        "auc": auc(scores, faces.same),
    }
    return metrics, scores


def bootstrap_difference(a: np.ndarray, b: np.ndarray, faces: HeldOut, rounds: int, seed: int) -> dict:
    """``metric(a) - metric(b)`` for TPR at FPR 0.01 and AUC on the same pairs, with a 95% interval from
    resampling the held-out identities (a pair is kept with the multiplicity of its left image's identity)."""
    from recognition.lfw import tpr_at_fpr

    names = np.unique(faces.identities)
    owner = np.searchsorted(names, faces.identities[faces.left])
    rng = np.random.default_rng(seed)
    draws = {"tpr_at_fpr_0.01": [], "auc": []}
    for _ in range(rounds):
        counts = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        index = np.repeat(np.arange(len(faces.same)), counts[owner])
        same = faces.same[index]
        draws["tpr_at_fpr_0.01"].append(tpr_at_fpr(a[index], same, 0.01) - tpr_at_fpr(b[index], same, 0.01))
        draws["auc"].append(auc(a[index], same) - auc(b[index], same))
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def _recipes(specs: tuple[str, ...]) -> dict[str, list[str]]:
    recipes = {}
    for spec in specs:
        name, sep, sets = spec.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{spec!r}: expected NAME=KEY=VALUE,KEY=VALUE (or NAME= for the base config)")
        recipes[name] = [s for s in sets.split(",") if s]
    return recipes


def table(rows: dict[str, dict]) -> str:
    lines = [
        "| model | accuracy | TPR@FPR=0.01 | TPR@FPR=0.001 | AUC | TPR@0.01 − dlib [95% CI] | AUC − dlib [95% CI] |"
    ]
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        m, d = row["metrics"], row.get("minus_dlib")
        diff = (
            f"{d['tpr_at_fpr_0.01']:+.4f} [{d['ci']['tpr_at_fpr_0.01'][0]:+.4f}, {d['ci']['tpr_at_fpr_0.01'][1]:+.4f}] | "
            f"{d['auc']:+.4f} [{d['ci']['auc'][0]:+.4f}, {d['ci']['auc'][1]:+.4f}]"
            if d
            else "— | —"
        )
        lines.append(
            f"| {name} | {m['accuracy']:.4f} | {m['tpr_at_fpr_0.01']:.4f} | {m['tpr_at_fpr_0.001']:.4f} "
            f"| {m['auc']:.4f} | {diff} |"
        )
    return "\n".join(lines)


@click.command(context_settings={"show_default": True})
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR", help="Work folder.")
@click.option(
    "--manifest",
    "manifests",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="DIR",
    help="A preprocess output folder (real crops; never LFW). Repeatable.",
)
@click.option(
    "--recipe",
    "recipe_specs",
    multiple=True,
    required=True,
    metavar="NAME=KEY=VALUE,...",
    help="A candidate: finetune --set overrides on configs/recognition/grid-pretrained.yaml (NAME= for it as is).",
)
@click.option("--seeds", default="0", metavar="S,S", help="Fine-tuning seeds per recipe.")
@click.option("--holdout", default=0.15, type=click.FloatRange(0.01, 0.5), help="Share of identities held out.")
@int_option("--pairs-per-identity", minimum=1, default=10, help="Matched pairs drawn per held-out identity.")
@int_option("--mismatched-ratio", minimum=1, default=5, help="Mismatched pairs per matched pair.")
@int_option("--split-seed", minimum=0, default=0, help="Seed of the identity split, the pairs and the folds.")
@int_option("--bootstrap", minimum=100, default=1000, help="Bootstrap rounds over held-out identities.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=ROOT / "benchmarks" / "results" / "regime_recipe.json",
    help="Results file.",
)
def main(
    out, manifests, recipe_specs, seeds, holdout, pairs_per_identity, mismatched_ratio, split_seed, bootstrap, json_path
):
    """Fine-tune regime (a) recipes on CelebA training identities; verify on held-out identities against the
    untouched dlib port."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    recipes = _recipes(recipe_specs)
    seed_list = tuple(int(s) for s in seeds.split(","))
    tables = read_manifests(list(manifests))
    identities = identities_of(tables)
    heldout = split_identities(identities, holdout, split_seed)
    train = write_training_shards(list(manifests), tables, heldout, out)
    runs = finetune_recipes(recipes, seed_list, train, out)
    faces = heldout_faces(tables, heldout, pairs_per_identity, mismatched_ratio, split_seed)
    del tables
    log.info("held out: %d identities, %d faces, %d pairs", len(heldout), len(faces.identities), len(faces.same))
    rows, scores = {}, {}
    models = {DLIB: DlibEmbedder(torch.device("cpu"))}
    for name in recipes:
        step0 = step0_checkpoint(runs[f"{name}-s{seed_list[0]}"], out / "step0" / name)
        models[f"{name} ({STEP0})"] = load_embedder(step0, torch.device("cpu"))
    models.update({label: load_embedder(run / "checkpoint", torch.device("cpu")) for label, run in runs.items()})
    for label, embedder in models.items():
        cache = out / "features" / f"{label.replace('/', '_').replace(' ', '_')}.npz"
        metrics, scores[label] = score(embed(embedder, faces, cache), faces, split_seed)
        rows[label] = {"metrics": metrics}
        if label != DLIB:
            minus = {k: metrics[k] - rows[DLIB]["metrics"][k] for k in METRICS}
            minus["ci"] = bootstrap_difference(scores[label], scores[DLIB], faces, bootstrap, split_seed)
            rows[label]["minus_dlib"] = minus
    text = table(rows)
    click.echo(text)
    record = {
        "heldout_identities": len(heldout),
        "training_identities": len(identities) - len(heldout),
        "heldout_faces": len(faces.identities),
        "pairs": {"matched": int(faces.same.sum()), "mismatched": int((~faces.same).sum())},
        "recipes": {name: sets for name, sets in recipes.items()},
        "base_config": str(BASE_CONFIG.relative_to(ROOT)),
        "seeds": list(seed_list),
        "models": rows,
        "table": text,
    }
    write_record(json_path, record)


if __name__ == "__main__":
    main()

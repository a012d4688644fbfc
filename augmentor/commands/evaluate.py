"""``augmentor evaluate``: the paper's Table 1 on LFW, with the classical baselines in the same run."""

from __future__ import annotations

from pathlib import Path

import click

from augmentor.cli_errors import user_errors
from augmentor.layout import CONFIG_FILE
from augmentor.options import (
    batch_size_option,
    dataset_options,
    device_option,
    donors_option,
    file_option,
    folder_option,
    int_option,
    limit_option,
    model_specs_option,
    out_dir_option,
    pop_listing,
    precision_option,
    seed_option,
    workers_option,
)


def checkpoint_label(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (labelled by its run folder) -> (label, path)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, ""
    folder = Path(path)
    if not name:
        name = folder.parent.name if folder.name in ("checkpoint", "last") else folder.name
    return name, folder


def labelled_models(model_specs: tuple[str, ...], progan: Path | None) -> dict[str, Path]:
    """``{label: checkpoint folder}`` of every ``--model`` and ``--progan``; two with one label are refused (a dict
    would silently keep only the last)."""
    pairs = [checkpoint_label(spec) for spec in model_specs]
    if progan is not None:
        pairs.append(("ProGAN", progan))
    models: dict[str, Path] = {}
    for name, path in pairs:
        if name in models:
            raise click.BadParameter(
                f"two models are labelled {name!r} ({models[name]} and {path}); name them: --model NAME=PATH",
                param_hint="--model",
            )
        models[name] = path
    return models


def resolve_models(model_specs: tuple[str, ...], progan: Path | None, baselines_only: bool) -> dict[str, Path]:
    """The labelled checkpoint folders to evaluate: the shipped model when none is given (unless baselines only).

    Raises:
        click.ClickException / click.BadParameter: no shipped model, or a folder that is no checkpoint.
    """
    from augmentor.hallucinator import default_weights

    models = labelled_models(model_specs, progan)
    if not models and not baselines_only:
        try:
            models["cascade (shipped)"] = default_weights()
        except FileNotFoundError as exc:
            raise click.ClickException(f"no --model given: {exc}; pass --model PATH or --baselines-only") from exc
    for name, path in models.items():
        if not (Path(path) / CONFIG_FILE).is_file():
            raise click.BadParameter(
                f"{path} is not a checkpoint folder (no config.json)", param_hint=f"--model {name}"
            )
    return models


@click.command("evaluate", context_settings={"show_default": True})
@model_specs_option("A checkpoint folder to evaluate; repeatable. Default: the shipped model.")
@folder_option("--progan", "progan", metavar="PATH", help="A progressive-regime checkpoint, shown as 'ProGAN'.")
@click.option("--baselines-only", is_flag=True, help="Score only the classical baselines (no model).")
@dataset_options(default="lfw")
@out_dir_option("Output folder: table.md, metrics.json, per_image.parquet, comparison.png, match_histogram.png.")
@limit_option("Evaluate N images drawn with --seed. Default: all.", minimum=2)
@seed_option("Seed of the image selection.")
@device_option()
@batch_size_option(64, "Images per forward pass.")
@workers_option("Masking processes (default: all cores).")
@click.option(
    "--match-features",
    default="dlib",
    metavar="dlib|PATH",
    help="Features of the match score: dlib (the dlib-ResNet port) or a local ResNet-50 state-dict file.",
)
@file_option(
    "--inception-weights",
    metavar="PATH",
    help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth) for Inception FID.",
)
@precision_option("The models' inference precision; metric networks always run fp32.", default="fp32")
@int_option(
    "--reference-size",
    minimum=2,
    help="Real images, disjoint from the evaluated ones, that FID/KID/SWD compare against. Default: as many as --limit.",
)
@int_option(
    "--bootstrap",
    "num_bootstrap",
    minimum=10,
    default=1000,
    help="Paired bootstrap resamples of every model-minus-baseline difference (SWD: N/10, at least 10).",
)
@click.option(
    "--chip-identity",
    is_flag=True,
    help="Also score dlib L2 and the share under dlib's 0.6 threshold on dlib's face chips (one more dlib pass per method).",
)
@donors_option(
    "Donors of the 'nearest-donor context' rows: a preprocess output folder or its saved donor bank "
    "(docs/donors.md). Default: --donor-pool images of the evaluated dataset's other identities. Donors from another "
    "dataset make the C2ST judge the dataset's style, not the seams."
)
@int_option(
    "--donor-pool",
    minimum=0,
    default=2000,
    help="Without --donors: images of identities neither evaluated nor in the reference set, preprocessed as donors "
    "(0: no donor rows).",
)
@click.option(
    "--refined/--no-refined",
    "donor_refine",
    default=True,
    help="Also score the refined (seamless) donor composition beside the plain one.",
)
@int_option(
    "--copies",
    minimum=1,
    default=1,
    metavar="K",
    help="Copies per face of the models and donor rows; K >= 2 measures how different they are and scores each.",
)
@int_option(
    "--c2st-seeds",
    minimum=0,
    default=3,
    help="Seeds of the classifier two-sample test (whole crop, jaw and forehead windows); 0 skips it.",
)
def evaluate(
    model_specs, progan, baselines_only, out, inception_weights, num_bootstrap, donors, c2st_seeds, **options
) -> None:
    """Score hallucinations against the aligned originals: the paper's Table 1, with baselines in the same run, and
    how real they look: a classifier two-sample test, SWD in two normalisations, seam SWD, diversity of copies.

    Masks each image with our pipeline, fills the background with every method (models, cv2 Navier-Stokes and
    Telea inpainting, a mean-colour fill, the black mask itself) and reports SSIM over the whole image and over the
    background, ProGAN's multi-scale SWD, FID-face/KID-face against a disjoint real set (with the real-vs-real
    floor), match score, face-perceptual distance, dlib's same-person share on face chips and, where their weights
    are on disk, LPIPS, PieAPP and Inception FID. Every model-minus-best-baseline difference gets a paired
    bootstrap 95% CI. A small CNN is trained per method to tell its outputs from real photos of the same dataset
    (C2ST, over the whole crop and over windows on the jaw and the forehead): 0.5 means it cannot.

    \b
    Examples:
      augmentor evaluate --root data/lfw/images --limit 1000 --out runs/eval
      augmentor evaluate --model runs/00003-cascade-cascade/checkpoint --progan runs/00004-progressive/checkpoint \\
          --root data/lfw/images --limit 1000 --out runs/eval
      augmentor evaluate --baselines-only --root data/lfw/images --limit 200 --out runs/eval-baselines
    """
    from augmentor.evaluation.evaluate import EvalSettings
    from augmentor.evaluation.evaluate import evaluate as run_evaluation

    models = resolve_models(model_specs, progan, baselines_only)
    _, _, table = pop_listing(options)
    settings = EvalSettings(  # options: limit, seed, device, precision, copies, match_features, donor_pool ...
        **options,
        inception_weights=str(inception_weights) if inception_weights else None,
        num_bootstrap=num_bootstrap,
        swd_bootstrap=max(10, num_bootstrap // 10),
        donors=str(donors) if donors else None,
        c2st_seeds=tuple(range(c2st_seeds)),
    )
    with user_errors():
        report = run_evaluation(table, out, models, settings)
    click.echo((out / "table.md").read_text())
    click.echo(
        f"wrote {out}/table.md, metrics.json, per_image.parquet, comparison.png, match_histogram.png "
        f"({report['seconds']} s)"
    )

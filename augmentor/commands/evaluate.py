"""``augmentor evaluate``: the paper's Table 1 on LFW, with the classical baselines in the same run."""

from __future__ import annotations

from pathlib import Path

import click

from augmentor.options import (
    batch_size_option,
    dataset_options,
    device_option,
    limit_option,
    load_listing,
    out_dir_option,
    workers_option,
)


def _model_label(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (labelled by its run folder) -> (label, path)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, ""
    folder = Path(path)
    if not name:
        name = folder.parent.name if folder.name in ("checkpoint", "last") else folder.name
    return name, folder


@click.command("evaluate", context_settings={"show_default": True})
@click.option(
    "--model",
    "model_specs",
    multiple=True,
    metavar="[NAME=]PATH",
    help="A checkpoint folder to evaluate; repeatable. Default: the shipped model.",
)
@click.option(
    "--progan",
    "progan",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="A progressive-regime checkpoint, shown as 'ProGAN'.",
)
@click.option("--baselines-only", is_flag=True, help="Score only the classical baselines (no model).")
@dataset_options(default="lfw")
@out_dir_option("Output folder: table.md, metrics.json, per_image.parquet, comparison.png, match_histogram.png.")
@limit_option("Evaluate N images drawn with --seed. Default: all.", minimum=2)
@click.option("--seed", type=int, default=0, metavar="INT", help="Seed of the image selection.")
@device_option()
@batch_size_option(64, "Images per forward pass.")
@workers_option("Masking processes (default: all cores).")
@click.option(
    "--match-features",
    default="dlib",
    metavar="dlib|PATH",
    help="Features of the match score: dlib (the dlib-ResNet port) or a local ResNet-50 state-dict file.",
)
@click.option(
    "--inception-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth) for Inception FID.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "auto"]),
    default="fp32",
    help="The models' inference precision (auto: bf16 on CUDA, fp32 on the CPU). Metric networks always run fp32.",
)
@click.option(
    "--reference-size",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Real images, disjoint from the evaluated ones, that FID/KID/SWD compare against. Default: as many as --limit.",
)
@click.option(
    "--bootstrap",
    "num_bootstrap",
    type=click.IntRange(min=10),
    default=1000,
    metavar="N",
    help="Paired bootstrap resamples of every model-minus-baseline difference (SWD: N/10, at least 10).",
)
@click.option(
    "--chip-identity",
    is_flag=True,
    help="Also score dlib L2 and the share under dlib's 0.6 threshold on dlib's face chips (one more dlib pass per method).",
)
@click.option(
    "--donors",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Add a 'nearest-donor context' row: a preprocess output folder (e.g. of CelebA) or its saved donor bank "
    "(see docs/donors.md). Never LFW itself.",
)
def evaluate(
    model_specs,
    progan,
    baselines_only,
    dataset,
    root,
    identities,
    path_column,
    identity_column,
    out,
    limit,
    seed,
    device,
    batch_size,
    workers,
    match_features,
    inception_weights,
    precision,
    reference_size,
    num_bootstrap,
    chip_identity,
    donors,
) -> None:
    """Score hallucinations against the aligned originals: the paper's Table 1, with baselines in the same run.

    Masks each image with our pipeline, fills the background with every method (models, cv2 Navier-Stokes and
    Telea inpainting, a mean-colour fill, the black mask itself) and reports SSIM over the whole image and over the
    background, ProGAN's multi-scale SWD, FID-face/KID-face against a disjoint real set (with the real-vs-real
    floor), match score, face-perceptual distance, dlib's same-person share on face chips and, where their weights
    are on disk, LPIPS, PieAPP and Inception FID. Every model-minus-best-baseline difference gets a paired
    bootstrap 95% CI.

    \b
    Examples:
      augmentor evaluate --root data/lfw/images --limit 1000 --out runs/eval
      augmentor evaluate --model runs/00003-cascade-cascade/checkpoint --progan runs/00004-progressive/checkpoint \\
          --root data/lfw/images --limit 1000 --out runs/eval
      augmentor evaluate --baselines-only --root data/lfw/images --limit 200 --out runs/eval-baselines
    """
    from augmentor.evaluation.evaluate import EvalSettings
    from augmentor.evaluation.evaluate import evaluate as run_evaluation
    from augmentor.hallucinator import default_weights
    from augmentor.resources import MissingModelFileError

    models = dict(_model_label(spec) for spec in model_specs)
    if progan is not None:
        models["ProGAN"] = progan
    if not models and not baselines_only:
        try:
            models["cascade (shipped)"] = default_weights()
        except FileNotFoundError as exc:
            raise click.ClickException(f"no --model given: {exc}; pass --model PATH or --baselines-only") from exc
    for name, path in models.items():
        if not (Path(path) / "config.json").is_file():
            raise click.BadParameter(
                f"{path} is not a checkpoint folder (no config.json)", param_hint=f"--model {name}"
            )
    settings = EvalSettings(
        limit=limit,
        seed=seed,
        device=device,
        batch_size=batch_size,
        workers=workers,
        match_features=match_features,
        inception_weights=str(inception_weights) if inception_weights else None,
        reference_size=reference_size,
        precision=precision,
        num_bootstrap=num_bootstrap,
        swd_bootstrap=max(10, num_bootstrap // 10),
        chip_identity=chip_identity,
        donors=str(donors) if donors else None,
    )
    _, _, table = load_listing(dataset, root, identities, path_column, identity_column)
    try:
        report = run_evaluation(table, out, models, settings)
    except (MissingModelFileError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo((out / "table.md").read_text())
    click.echo(
        f"wrote {out}/table.md, metrics.json, per_image.parquet, comparison.png, match_histogram.png "
        f"({report['seconds']} s)"
    )

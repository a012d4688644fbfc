"""The ``augmentor run`` command. Imports only click at module level; Ray and torch load when it runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from augmentor.cli_errors import user_errors
from augmentor.errors import InputError
from augmentor.layout import CONFIG_FILE
from augmentor.options import (
    address_option,
    batch_size_option,
    choice_option,
    dataset_options,
    donors_option,
    dry_run_option,
    int_option,
    limit_option,
    model_option,
    out_dir_option,
    pop_listing,
    precision_option,
    progress_option,
    seed_option,
    workers_option,
)

MAX_COPIES = 32  # pipelines.augment.MAX_COPIES
METHODS = ("cascade", "donor")


@click.command("run", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@dataset_options
@out_dir_option("Output folder: images/, manifest.parquet, run.json. Rerun with the same folder to resume.")
@model_option(
    "Checkpoint folder (model.safetensors + config.json), e.g. a training run's checkpoint/. Default: the shipped model."
)
@choice_option(
    "--method",
    choices=METHODS,
    default="cascade",
    help="cascade: the generator paints the context. donor: each face takes the whole context of a real face of "
    "another identity from --donors (K copies = the K nearest donors; CPU only). See docs/donors.md.",
)
@donors_option(
    "--method donor: an `augmentor preprocess` output folder of donor faces (its donor bank is built there once, in "
    "donor_bank/), or that donor_bank/ folder."
)
@click.option(
    "--refine/--no-refine",
    default=True,
    help="--method donor: the seamless composition (outline warp, multi-band seam); --no-refine: the plain one "
    "(similarity fit, Poisson seam). See docs/donors.md.",
)
@int_option(
    "--copies",
    minimum=1,
    maximum=MAX_COPIES,
    default=1,
    metavar="K",
    help="Hallucinations per face; K > 1 needs a checkpoint with noise channels (cascade) or takes the K nearest "
    "donors (donor).",
)
@choice_option(
    "--format",
    "image_format",
    choices=["png", "jpeg"],
    default="png",
    help="Image file format (JPEG at quality 95).",
)
@seed_option("Run seed, mixed into every image's noise seed.")
@address_option
@int_option(
    "--num-gpus",
    minimum=0,
    help="GPU actors for hallucination (one GPU each); 0 runs it on CPU actors. Default: every GPU of the cluster.",
)
@workers_option(
    "With GPUs: masking actors (default: the CPUs left). CPU only: hallucinating actors (default: one per CPU), "
    "plus one masking actor per 4 of them."
)
@batch_size_option(None, "Faces per forward pass and per manifest part. Default: 64 on GPU, 16 on CPU.")
@limit_option("Only the first N images of the listing (sorted by identity, image id).")
@precision_option("Inference precision of the cascade and the match score.")
@progress_option("Show a progress bar with per-stage img/s.")
@int_option(
    "--preview",
    minimum=0,
    default=8,
    help="Write preview.png: N faces as original | masked | hallucinated copies (0: none).",
)
@dry_run_option("Print the resolved settings and the work left, then stop.")
def run(model, method, donors, limit, preview, dry_run, **options) -> None:
    """Hallucinate context and background for every face of a dataset, on a Ray cluster.

    Masks each image on CPU actors, hallucinates K backgrounds per face with the cascade on GPU actors (CPU actors
    without GPUs), scores each against the aligned original, and writes images/<identity>/<image>_hal<k>.png plus
    manifest.parquet (one row per image and copy, failures included). A rerun with the same --out resumes.
    With --method donor, each face instead takes the context of its K nearest real donor faces of another identity
    from --donors (docs/donors.md). See docs/pipeline.md.

    \b
    Examples:
      augmentor run --model runs/00003-cascade-cascade/checkpoint --out runs/aug-samples
      augmentor run --dataset lfw --root data/lfw/images --model CKPT --out runs/aug-lfw
      augmentor run --dataset casia --root data/casia --model CKPT --copies 4 --out runs/aug-casia
      augmentor run --dataset lfw --root data/lfw/images --method donor --donors runs/pre-celeba --copies 3 --out OUT
      augmentor run --address auto --dataset celeba --root /shared/celeba --model CKPT --out /shared/aug
    """
    from pipelines.augment import JobFailedError, format_summary
    from pipelines.augment import run as run_pipeline
    from pipelines.plan import RunSettings, prepare

    dataset, root, table = pop_listing(options)
    model = _check_source(method, model, donors)
    # options: out, copies, image_format, seed, batch_size, workers, num_gpus, address, progress, precision, refine
    settings = RunSettings(**options, model=model, method=method, donors=donors)
    extra = {"dataset": dataset, "root": str(Path(root).resolve())}
    with user_errors(ConnectionError, JobFailedError):  # a lost cluster or a failed job, not a bug's RuntimeError
        if dry_run:
            prepared = prepare(table, settings, limit, extra)
            click.echo(json.dumps(_dry_run_report(prepared, settings), indent=2))
            return
        summary = run_pipeline(table, settings, limit, extra)
    click.echo(format_summary(summary))
    if preview:
        from pipelines.preview import write_preview

        sheet = write_preview(settings.out, max_faces=preview)
        if sheet is not None:
            click.echo(f"preview: {sheet}")


def _check_source(method: str, model: Path | None, donors: Path | None) -> Path | None:
    """The checkpoint a cascade run uses (the shipped one by default); None for a donor run.

    Raises:
        click.BadParameter, click.ClickException: options that do not go together, or no model to use.
    """
    from augmentor.hallucinator import default_weights

    if method == "donor":
        if donors is None:
            raise click.BadParameter("--method donor needs --donors PATH", param_hint="--donors")
        if model is not None:
            raise click.BadParameter("--method donor uses no checkpoint; drop --model", param_hint="--model")
        return None
    if donors is not None:
        raise click.BadParameter("--donors goes with --method donor", param_hint="--donors")
    if model is None:
        try:
            return default_weights()
        except FileNotFoundError as exc:
            raise click.ClickException(f"no --model given: {exc}; pass --model PATH") from exc
    if not (model / CONFIG_FILE).is_file():
        raise click.BadParameter(f"{model} is not a checkpoint folder (no config.json)", param_hint="--model")
    return model


def _dry_run_report(prepared, settings) -> dict:
    """The resolved settings, the work left and, for a local run, the resource plan."""
    import os

    from pipelines.plan import plan_resources

    report = {
        **prepared.info,
        "out": str(settings.out),
        "images": len(prepared.listing),
        "identities": int(prepared.listing["label"].nunique()),
        "rows_total": len(prepared.listing) * settings.copies,
        "rows_todo": prepared.rows_todo,
        "address": settings.address or "local",
    }
    if settings.address is None:
        import torch

        gpus = torch.cuda.device_count() if settings.num_gpus is None else settings.num_gpus
        gpus = 0 if settings.method == "donor" else gpus
        try:
            plan = plan_resources(os.cpu_count() or 1, gpus, settings.workers, settings.batch_size, settings.precision)
            report["plan"] = plan.__dict__
        except InputError as exc:
            report["plan"] = f"does not fit: {exc}"
    else:
        report["plan"] = "made from the cluster's resources when the run starts"
    return report

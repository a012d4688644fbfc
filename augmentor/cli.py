"""The ``augmentor`` command line. Each command parses its options and calls one library function."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from augmentor.pack_cli import pack as pack_command

DATASET_NAMES = ("casia", "lfw", "celeba", "folder", "list")  # pipelines.datasets registry; a test keeps them equal


def dataset_options(command):
    """The options that pick a dataset listing: --dataset, --root and the adapters' own options."""
    options = [
        click.option(
            "--dataset",
            type=click.Choice(DATASET_NAMES),
            default=None,
            metavar="NAME",
            help=f"Dataset layout: {', '.join(DATASET_NAMES)}. Omit to use the bundled sample faces.",
        ),
        click.option(
            "--root",
            type=click.Path(exists=True, path_type=Path),
            default=None,
            metavar="PATH",
            help="Dataset root folder (for 'list': the TSV/CSV/Parquet list file).",
        ),
        click.option(
            "--identities",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            metavar="TXT",
            help="celeba only: the identity_CelebA.txt file, if it is not next to the images.",
        ),
        click.option(
            "--path-column", default="path", metavar="NAME", help="list only: the column holding image paths."
        ),
        click.option("--identity-column", default="identity", metavar="NAME", help="list only: the identity column."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def load_listing(
    dataset: str | None, root: Path | None, identities: Path | None, path_column: str, identity_column: str
):
    """The listing chosen by :func:`dataset_options` (the bundled samples without --dataset).

    Returns:
        ``(dataset name, root, DataFrame)``.

    Raises:
        click.BadParameter / click.ClickException: inconsistent options or an unreadable dataset.
    """
    from augmentor.samples import SAMPLES_LIST
    from pipelines.datasets import DatasetError, load_dataset

    if dataset is None:
        if root is not None:
            raise click.BadParameter("--root needs --dataset", param_hint="--root")
        dataset, root = "list", SAMPLES_LIST
    elif root is None:
        raise click.BadParameter(f"--dataset {dataset} needs --root", param_hint="--root")
    options: dict[str, object] = {}
    if dataset == "celeba" and identities is not None:
        options["identities"] = identities
    if dataset == "list":
        options.update(path_column=path_column, identity_column=identity_column)
    try:
        return dataset, root, load_dataset(dataset, root, **options)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """augmentor: hallucinate context and background around masked faces to grow face-recognition training sets."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@dataset_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    metavar="DIR",
    help="Output folder for the Parquet shards. Rerun with the same folder to resume.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="YAML",
    help="Masking config (see configs/preprocess.yaml).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a masking config value, e.g. --set detector=mtcnn. Repeatable.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, metavar="N", help="Worker processes. Default: all cores."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Only the first N images of the listing (sorted by identity, image id).",
)
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, metavar="ROWS", help="Rows per Parquet shard.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("-n", "--dry-run", is_flag=True, help="Print the resolved settings and the image count, then stop.")
def preprocess(
    dataset,
    root,
    out,
    config_path,
    overrides,
    workers,
    limit,
    shard_size,
    identities,
    path_column,
    identity_column,
    progress,
    dry_run,
) -> None:
    """Detect, align and mask every face of a dataset into Parquet shards.

    Each row holds the 128x128 aligned crop, its face mask and the 68 aligned landmarks, or a status and
    reason when the image failed (no_face / error). A rerun with the same --out skips finished images.

    \b
    Examples:
      augmentor preprocess --out runs/samples
      augmentor preprocess --dataset lfw --root data/lfw/images --out runs/lfw
      augmentor preprocess --dataset list --root data/celeba/identities.tsv --out runs/celeba
    """
    from augmentor.config import ConfigError, load_config, to_dict
    from augmentor.faces import MaskingConfig
    from augmentor.preprocess import preprocess as run_preprocess
    from augmentor.resources import MissingModelFileError
    from augmentor.visualize import shard_preview

    dataset, root, table = load_listing(dataset, root, identities, path_column, identity_column)
    try:
        masking = load_config(MaskingConfig, config_path, list(overrides))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if limit is not None:
        table = table.head(limit)
    settings = {
        "dataset": dataset,
        "root": str(root),
        "out": str(out),
        "images": len(table),
        "masking": to_dict(masking),
        "workers": workers,
        "shard_size": shard_size,
    }
    if dry_run:
        click.echo(json.dumps(settings, indent=2))
        return
    try:
        summary = run_preprocess(table, out, masking=masking, workers=workers, shard_size=shard_size, progress=progress)
    except (MissingModelFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    counts = summary.status_counts
    click.echo(
        f"{summary.total} images in {out}: {counts.get('ok', 0)} ok, {counts.get('no_face', 0)} no face, "
        f"{counts.get('error', 0)} errors ({summary.skipped} already done, {summary.processed} processed "
        f"in {summary.seconds:.1f} s, {summary.images_per_second:.1f} img/s on {summary.workers} workers)"
    )
    for reason, count in sorted(summary.reason_counts.items()):
        click.echo(f"  {reason}: {count}")
    preview = shard_preview(out, out / "preview.png")
    if preview is not None:
        click.echo(f"preview: {preview}")


def _next_run_dir(root: Path, desc: str) -> Path:
    """``root/00012-desc``: one more than the highest numbered run folder in ``root``."""
    numbers = (
        [int(p.name.split("-", 1)[0]) for p in root.glob("[0-9]" * 5 + "-*") if p.is_dir()] if root.is_dir() else []
    )
    return root / f"{max(numbers, default=-1) + 1:05d}-{desc}"


@main.command()
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Output folder of `augmentor preprocess` (overrides data.path of the config).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="YAML",
    help="Training config, e.g. configs/train/cascade.yaml. Default: built-in.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set loss.identity=0 --set epochs=5. Repeatable.",
)
@click.option(
    "--regime",
    type=click.Choice(["cascade", "progressive"]),
    default=None,
    help="cascade: all blocks every step (the paper); progressive: ProGAN-style growth. Default: config.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, metavar="N", help="Maximum epochs. Default: config."
)
@click.option("--device", default=None, metavar="DEVICE", help="auto, cpu, cuda, cuda:1 ... Default: config (auto).")
@click.option(
    "--out",
    "out_root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    metavar="DIR",
    help="Parent folder of the numbered run folder.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Continue this run folder from its last finished epoch (its saved config wins).",
)
@click.option("-n", "--dry-run", is_flag=True, help="Print the resolved config, then stop.")
def train(data_path, config_path, overrides, regime, epochs, device, out_root, resume_dir, dry_run) -> None:
    """Train the cascaded GAN (or its progressive variant) on preprocessed faces.

    Writes a numbered run folder with train_config.json, metrics.jsonl, a sample grid per epoch,
    loss_curves.png, checkpoint/ (best validation epoch), last/ and resume/.

    \b
    Examples:
      augmentor train --data runs/celeba --config configs/train/cascade.yaml
      augmentor train --data runs/celeba --config configs/train/progressive.yaml
      augmentor train --data runs/celeba --config configs/train/tiny.yaml --device cpu
      augmentor train --resume runs/00003-cascade-cascade
    """
    from augmentor.config import ConfigError, load_config, to_dict
    from augmentor.resources import MissingModelFileError
    from augmentor.train import TrainConfig, load_run_config
    from augmentor.train import train as run_training

    if resume_dir is not None:
        if config_path or overrides or data_path or regime or epochs or device:
            raise click.BadParameter(
                "--resume takes the run's saved config; give no other settings", param_hint="--resume"
            )
        cfg, run_dir = load_run_config(resume_dir), resume_dir
    else:
        extra = list(overrides)
        extra += [f"data.path={data_path}"] if data_path else []
        extra += [f"regime={regime}"] if regime else []
        extra += [f"epochs={epochs}"] if epochs else []
        extra += [f"device={device}"] if device else []
        try:
            cfg = load_config(TrainConfig, config_path, extra)
        except (ConfigError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        if not cfg.data.path:
            raise click.BadParameter(
                "no training data: pass --data DIR (an `augmentor preprocess` output)", param_hint="--data"
            )
        desc = f"{cfg.regime}-{config_path.stem if config_path else 'default'}"
        run_dir = _next_run_dir(out_root, desc)
    if dry_run:
        click.echo(json.dumps({"run_dir": str(run_dir), **to_dict(cfg)}, indent=2))
        return
    click.echo(f"run folder: {run_dir}")
    try:
        checkpoint = run_training(cfg, run_dir, resume=resume_dir is not None)
    except (FileNotFoundError, MissingModelFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"best generator: {checkpoint}")
    click.echo(f"loss curves: {run_dir / 'loss_curves.png'}; samples: {run_dir / 'samples'}")


@main.command()
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    metavar="DIR",
    help="Checkpoint folder to export, e.g. runs/00003-cascade-cascade/checkpoint.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    metavar="DIR",
    help="Destination folder; augmentor/weights/cascade128 makes it the shipped default model.",
)
@click.option(
    "--dtype",
    type=click.Choice(["bfloat16", "float16", "float32"]),
    default="bfloat16",
    help="Stored precision of the weights (loading casts back to float32).",
)
@click.option(
    "--max-shard-mb",
    type=click.FloatRange(min=0.1),
    default=16.0,
    metavar="MIB",
    help="Split the weights into files of at most this size.",
)
@click.option(
    "--model-card",
    default="docs/model-card.md",
    metavar="PATH",
    help="Model card the exported config.json points to.",
)
def export(checkpoint: Path, out: Path, dtype: str, max_shard_mb: float, model_card: str) -> None:
    """Export a trained generator as a compact checkpoint, e.g. to ship it as the default model.

    Stores the weights in bf16 (half the size, outputs change by about 1/100 of the range), sharded when large,
    with the training summary carried into config.json. Reloads the result and prints the largest output change.

    \b
    Example:
      augmentor export --checkpoint runs/00000-cascade-cpu-interim/checkpoint --out augmentor/weights/cascade128
    """
    from augmentor.export import export_generator

    try:
        report = export_generator(checkpoint, out, dtype, max_shard_mb, {"model_card": model_card})
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2))


def _model_label(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (labelled by its run folder) -> (label, path)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, ""
    folder = Path(path)
    if not name:
        name = folder.parent.name if folder.name in ("checkpoint", "last") else folder.name
    return name, folder


@main.command()
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
@click.option(
    "--dataset",
    type=click.Choice(DATASET_NAMES),
    default="lfw",
    metavar="NAME",
    help=f"Dataset layout of --root: {', '.join(DATASET_NAMES)}.",
)
@click.option(
    "--root",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    metavar="DIR",
    help="Dataset root, e.g. the LFW images folder.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    metavar="DIR",
    help="Output folder: table.md, metrics.json, per_image.parquet, comparison.png, match_histogram.png.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=2),
    default=None,
    metavar="N",
    help="Evaluate N images drawn with --seed. Default: all.",
)
@click.option("--seed", type=int, default=0, metavar="INT", help="Seed of the image selection.")
@click.option("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda ...")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, metavar="N", help="Images per forward pass.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, metavar="N", help="Masking processes (default: all cores)."
)
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
def evaluate(
    model_specs,
    progan,
    baselines_only,
    dataset,
    root,
    out,
    limit,
    seed,
    device,
    batch_size,
    workers,
    match_features,
    inception_weights,
) -> None:
    """Score hallucinations against the aligned originals: the paper's Table 1, with baselines in the same run.

    Masks each image with our pipeline, fills the background with every method (models, cv2 Navier-Stokes and
    Telea inpainting, a mean-colour fill, the black mask itself) and reports match score, SSIM, FID-face/KID-face,
    face-perceptual distance and, where their weights are on disk, LPIPS, PieAPP and Inception FID.

    \b
    Examples:
      augmentor evaluate --root data/lfw/images --limit 1000 --out runs/eval
      augmentor evaluate --model runs/00003-cascade-cascade/checkpoint --progan runs/00004-progressive/checkpoint \\
          --root data/lfw/images --limit 1000 --out runs/eval
      augmentor evaluate --baselines-only --root data/lfw/images --limit 200 --out runs/eval-baselines
    """
    from augmentor.evaluate import EvalSettings
    from augmentor.evaluate import evaluate as run_evaluation
    from augmentor.hallucinator import default_weights
    from augmentor.resources import MissingModelFileError
    from pipelines.datasets import DatasetError, load_dataset

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
    )
    try:
        table = load_dataset(dataset, root)
        report = run_evaluation(table, out, models, settings)
    except (DatasetError, MissingModelFileError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo((out / "table.md").read_text())
    click.echo(
        f"wrote {out}/table.md, metrics.json, per_image.parquet, comparison.png, match_histogram.png "
        f"({report['seconds']} s)"
    )


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.pass_context
def run(ctx: click.Context) -> None:
    """Hallucinate backgrounds for a whole dataset on a Ray cluster (see `augmentor run --help`)."""
    from pipelines.run_cli import run as command  # Ray and the real options load only for this command

    command.main(ctx.args, prog_name=ctx.command_path, standalone_mode=False)


_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@main.command("finetune", context_settings=_PASS_THROUGH, add_help_option=False)
@click.pass_context
def finetune(ctx: click.Context) -> None:
    """Fine-tune a face-recognition network on real (+ hallucinated) faces (see `augmentor finetune --help`)."""
    from recognition.cli import finetune as command  # torch and Ray load only for this command

    command.main(ctx.args, prog_name=ctx.command_path, standalone_mode=False)


@main.command("verify-lfw", context_settings=_PASS_THROUGH, add_help_option=False)
@click.pass_context
def verify_lfw(ctx: click.Context) -> None:
    """LFW verification: accuracy and TPR at FPR, 10-fold protocol (see `augmentor verify-lfw --help`)."""
    from recognition.cli import verify_lfw as command

    command.main(ctx.args, prog_name=ctx.command_path, standalone_mode=False)


@main.command("compare", context_settings=_PASS_THROUGH, add_help_option=False)
@click.pass_context
def compare(ctx: click.Context) -> None:
    """Table 2 from verify-lfw reports, with a fold-noise verdict (see `augmentor compare --help`)."""
    from recognition.cli import compare as command

    command.main(ctx.args, prog_name=ctx.command_path, standalone_mode=False)


main.add_command(pack_command)


if __name__ == "__main__":
    main()

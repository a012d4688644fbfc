"""The ``finetune``, ``verify-lfw`` and ``compare`` commands. Only click is imported here; each body imports its work.

``augmentor/cli.py`` registers these commands lazily, so ``augmentor --help`` never imports this module's work.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from augmentor.cli_errors import user_errors
from augmentor.layout import CONFIG_FILE
from augmentor.options import (
    address_option,
    batch_size_option,
    choice_option,
    config_options,
    device_option,
    donors_option,
    dry_run_option,
    file_option,
    float_option,
    folder_option,
    int_option,
    limit_option,
    model_specs_option,
    next_run_dir,
    out_dir_option,
    out_root_option,
    progress_option,
    resume_option,
    workers_option,
)

BACKBONES = ("resnet50", "resnet18", "dlib-resnet")  # recognition.backbone.BACKBONES; a test keeps them equal


def _model_label(spec: str) -> tuple[str, str]:
    """``[NAME=]KIND:SOURCE[,KEY=VALUE...]``, ``[NAME=]PATH`` (labelled by its run folder) or ``dlib`` -> (label, spec).

    An external recogniser's file (or facenet's weights) is checked here, before any image is aligned.
    """
    from recognition.embedders.spec import SpecError, check_source, is_model_spec, parse_model_spec

    name, sep, path = spec.partition("=")
    if not sep or is_model_spec(spec):
        name, path = "", spec
    if is_model_spec(path):
        try:
            parsed = parse_model_spec(path)
            check_source(parsed)
        except (SpecError, FileNotFoundError) as exc:
            raise click.BadParameter(str(exc), param_hint="--model") from exc
        return name or parsed.default_label(), path
    if path == "dlib":
        return name or "dlib-resnet (fixed)", path
    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file() and not (folder / "checkpoint" / CONFIG_FILE).is_file():
        raise click.BadParameter(f"{path} is not a recognition checkpoint or run folder", param_hint="--model")
    if not name:
        name = folder.parent.name if folder.name in ("checkpoint", "last") else folder.name
    return name, path


@click.command("finetune", context_settings={"show_default": True})
@click.option(
    "--manifest",
    "manifests",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    metavar="PATH",
    help="A preprocess output folder/shard (real crops) or a pipeline manifest Parquet (hallucinated copies). "
    "Repeatable; identities are numbered over the union.",
)
@out_root_option
@config_options(
    "Fine-tuning config, e.g. configs/recognition/finetune.yaml. Default: built-in (paper-like ResNet-50).",
    "Override a config value. Repeatable.",
)
@choice_option("--backbone", choices=BACKBONES, help="The trunk. Default: config.")
@click.option(
    "--init",
    default=None,
    metavar="none|pretrained|PATH",
    help="Trunk weights: none, pretrained (dlib-resnet: the installed dlib model) or a local state-dict file "
    "(ImageNet / VGGFace2 ResNet-50 ...). Nothing is downloaded. Default: config.",
)
@choice_option(
    "--embedding",
    choices=["fresh", "pretrained"],
    help="fresh: a new Linear + BatchNorm embedding layer (the paper); pretrained: dlib-resnet's own 128-D layer, "
    "learning at the trunk's rate (needs --init pretrained and model.embedding_dim 128). Default: config.",
)
@choice_option("--loss", choices=["softmax", "arcface"], help="Softmax (the paper) or ArcFace margin.")
@choice_option(
    "--image-size",
    choices=["128", "112", "96", "64"],
    help="Input crop side in px (the aligned 128 px crop, resized). Default: config.",
)
@int_option("--epochs", minimum=1, help="Maximum epochs.")
@batch_size_option(None, "Batch size per worker.", minimum=2)
@choice_option("--optimizer", choices=["sgd", "adamw"], help="Optimiser. Default: config.")
@float_option("--lr", minimum=0, min_open=True, metavar="LR", help="Base lr.")
@float_option(
    "--trunk-lr-scale",
    minimum=0,
    help="The trunk's lr = --lr x X (0: the trunk stays as initialised). Default: config.",
)
@int_option(
    "--frozen-trunk-epochs",
    minimum=0,
    help="Train only the new embedding layer and head for the first N epochs (trunk lr 0). Default: config.",
)
@float_option(
    "--copy-probability",
    minimum=0,
    maximum=1,
    metavar="P",
    help="An epoch is one pass over the real crops, each replaced with probability P by one of its copies (same "
    "image), chosen at random. Default (unset): train on the union of real crops and copies.",
)
@device_option(None, "auto, cpu, cuda, cuda:1 (single process).")
@int_option(
    "--num-workers",
    minimum=1,
    help="Data-parallel Ray Train workers; over 1 (or --address) trains through Ray. Default: 1 (no Ray).",
)
@click.option("--use-gpu/--no-use-gpu", default=None, help="Ray Train: one GPU per worker.")
@address_option
@resume_option
@progress_option()
@dry_run_option("Print the resolved config and data counts, then stop.")
def finetune(resume_dir, num_workers, use_gpu, address, progress, dry_run, **options) -> None:
    """Fine-tune a face-recognition network on real (+ hallucinated) faces: the paper's Table 2 training.

    Writes a numbered run folder: finetune_config.json, identities.json, val_image_ids.txt, metrics.jsonl,
    loss_curves.png, checkpoint/ (best validation loss), last/ and resume/. Give its path to verify-lfw --model.

    \b
    Examples:
      augmentor finetune --manifest runs/celeba --config configs/recognition/finetune.yaml --init r50.pth
      augmentor finetune --manifest runs/celeba --manifest runs/celeba-aug/manifest.parquet \\
          --config configs/recognition/finetune.yaml --init r50.pth
      augmentor finetune --manifest runs/celeba --manifest runs/celeba-donor --copy-probability 0.5 \\
          --config configs/recognition/grid-pretrained.yaml
      augmentor finetune --manifest runs/celeba --config configs/recognition/cpu-small.yaml
      augmentor finetune --manifest runs/casia --num-workers 8 --use-gpu --address auto
      augmentor finetune --resume runs/00007-resnet50-finetune
    """
    if resume_dir is not None:
        cfg, launch, run_dir = _resumed_run(resume_dir, options)
    else:
        cfg, launch, run_dir = _new_run(options)
    launch = {
        "num_workers": num_workers or launch.get("num_workers") or 1,
        "use_gpu": bool(use_gpu if use_gpu is not None else launch.get("use_gpu", False)),
        "address": address or launch.get("address"),
    }
    if dry_run:
        _print_dry_run(cfg, run_dir, launch)
        return
    click.echo(f"run folder: {run_dir}")
    checkpoint = _run_finetune(cfg, run_dir, launch, resume=resume_dir is not None, progress=progress)
    click.echo(f"best checkpoint: {checkpoint}")
    click.echo(f"metrics: {run_dir / 'metrics.jsonl'}; loss curves: {run_dir / 'loss_curves.png'}")


# finetune option -> the FinetuneConfig key it overrides
FINETUNE_OVERRIDES = {
    "manifests": "manifests",
    "backbone": "model.backbone",
    "embedding": "model.embedding",
    "init": "init",
    "loss": "model.head",
    "image_size": "data.image_size",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "trunk_lr_scale": "optim.trunk_lr_scale",
    "frozen_trunk_epochs": "optim.frozen_trunk_epochs",
    "copy_probability": "data.copy_probability",
    "device": "device",
}


def _resumed_run(resume_dir: Path, options: dict):
    """The saved config and launch options of the run being resumed; any other setting is refused."""
    from recognition.finetune import load_finetune_config

    given = [options[name] for name in (*FINETUNE_OVERRIDES, "config_path", "overrides")]
    if any(value is not None and value != () for value in given):
        raise click.BadParameter("--resume takes the run's saved config; give no other settings", param_hint="--resume")
    with user_errors():
        cfg, launch = load_finetune_config(resume_dir)
    return cfg, launch, resume_dir


def _new_run(options: dict):
    """The config from --config, --set and the typed options, checked, and a new numbered run folder."""
    from augmentor.config import load_config
    from recognition.finetune import FinetuneConfig, resolve_manifests

    values = {key: options[name] for name, key in FINETUNE_OVERRIDES.items()}
    values["manifests"] = [str(m) for m in options["manifests"]] or None
    values["data.image_size"] = int(options["image_size"]) if options["image_size"] else None
    values = {k: v for k, v in values.items() if v is not None}  # typed: a path named 2024 stays a string
    config_path = options["config_path"]
    with user_errors():
        cfg = resolve_manifests(load_config(FinetuneConfig, config_path, list(options["overrides"]), values))
    if not cfg.manifests:
        raise click.BadParameter("no training data: pass --manifest PATH", param_hint="--manifest")
    if cfg.init not in ("none", "pretrained") and not Path(cfg.init).is_file():
        raise click.BadParameter(f"{cfg.init}: no such weights file (nothing is downloaded)", param_hint="--init")
    desc = f"{cfg.model.backbone}-{config_path.stem if config_path else 'default'}"
    return cfg, {}, next_run_dir(options["out_root"], desc)


def _distributed(launch: dict) -> bool:
    return launch["num_workers"] > 1 or launch["address"] is not None


def _print_dry_run(cfg, run_dir: Path, launch: dict) -> None:
    from augmentor.config import to_dict
    from recognition.data import FaceData

    with user_errors():
        summary = FaceData.load(cfg.manifests, cfg.data.val_fraction, cfg.seed).summary()
    launch = {**launch, "ray": _distributed(launch)}
    click.echo(json.dumps({"run_dir": str(run_dir), "launch": launch, "counts": summary, **to_dict(cfg)}, indent=2))


def _run_finetune(cfg, run_dir: Path, launch: dict, resume: bool, progress: bool) -> Path:
    """Train in this process, or through Ray Train with several workers or a cluster address."""
    with user_errors():
        if _distributed(launch):
            from recognition.distributed import finetune_distributed

            return finetune_distributed(cfg, run_dir, **launch, resume=resume, progress=progress)
        from recognition.finetune import finetune as run_finetune

        return run_finetune(cfg, run_dir, resume=resume, progress=progress)


@click.command("verify-lfw", context_settings={"show_default": True})
@model_specs_option(
    "A finetune run or checkpoint folder, 'dlib' (the dlib face ResNet port as a fixed baseline), or your own "
    "recogniser: onnx:FILE, torchscript:FILE, facenet:vggface2|casia-webface|FILE, each optionally followed by "
    ",size=PX,mean=M,std=S,align=five-point|crop,channels=rgb|bgr (docs/recognition.md). Nothing is downloaded. "
    "Repeatable: every model goes on one ROC plot.",
    metavar="[NAME=]PATH|dlib|KIND:FILE",
    required=True,
)
@folder_option("--root", required=True, help="LFW images folder (Name/Name_0001.jpg).")
@file_option(
    "--pairs",
    "pairs_path",
    required=True,
    metavar="TXT",
    help="pairs.txt (View 2, 10 folds) or, with --view dev, pairsDevTest.txt.",
)
@choice_option(
    "--view",
    choices=["view2", "dev"],
    default="view2",
    help="view2: 10-fold protocol; dev: View 1 (threshold from --train-pairs, else 10-fold CV on the test pairs).",
)
@file_option("--train-pairs", metavar="TXT", help="--view dev: pairsDevTrain.txt, to choose the threshold on.")
@choice_option("--metric", choices=["pearson", "cosine"], default="pearson", help="Pair score.")
@out_dir_option("Output folder: report.json, roc.png, and the aligned/ and features/ caches.")
@limit_option("Quick run: only the first N matched and N mismatched pairs of each fold.")
@device_option()
@batch_size_option(64, "Images per forward pass.")
@workers_option("Alignment processes (default: all cores).")
@click.option("--flip/--no-flip", default=False, help="Add the features of the mirrored crop.")
@file_option(
    "--masking-config",
    metavar="YAML",
    help="Alignment settings (configs/preprocess.yaml); use the ones the training crops were made with.",
)
@click.option(
    "--context",
    "context_values",
    multiple=True,
    default=("original",),
    metavar="original|masked|donor|donor-refined",
    help="Score the pairs again with the second image of every pair re-contexted: masked (background, outside "
    "the face mask, black), donor (a real donor's context, plain composition; needs --donors) or donor-refined "
    "(the same donor, seamless composition; needs --donors). Repeatable or comma-separated; "
    "original is always scored.",
)
@donors_option(
    "--context donor / donor-refined: the donor bank (augmentor.donors.DonorBank), built from training "
    "faces, never LFW."
)
@progress_option("Show progress bars.")
def verify_lfw(
    model_specs, root, pairs_path, out, train_pairs, masking_config, context_values, donors, **options
) -> None:
    """LFW verification: accuracy (mean ± std over folds) and TPR at FPR 0.01 / 0.001, pooled and per fold.

    Each image is aligned with the masking pipeline (the whole aligned crop is scored); an image that cannot be
    aligned is centre-cropped and counted in the report. --context scores the same pairs again with the second
    image of each pair re-contexted (its background blacked out, or a donor's). Writes report.json, roc.png and
    roc-<context>.png to --out.

    \b
    Examples:
      augmentor verify-lfw --model dlib --root data/lfw/images --pairs data/lfw/pairs.txt --out runs/lfw-dlib
      augmentor verify-lfw --model real=runs/00007-resnet50-finetune --model aug=runs/00008-resnet50-finetune \\
          --root data/lfw/images --pairs data/lfw/pairs.txt --out runs/lfw-table2
      augmentor verify-lfw --model runs/00007-resnet50-finetune --view dev --pairs data/lfw/pairsDevTest.txt \\
          --train-pairs data/lfw/pairsDevTrain.txt --root data/lfw/images --out runs/lfw-dev
      augmentor verify-lfw --model dlib --context masked,donor,donor-refined --donors runs/donors \\
          --root data/lfw/images --pairs data/lfw/pairs.txt --out runs/lfw-contexts
      augmentor verify-lfw --model arc=onnx:w600k_r50.onnx --model fn=facenet:vggface2 --context masked \\
          --root data/lfw/images --pairs data/lfw/pairs.txt --out runs/lfw-own
    """
    from recognition.verify import VerifySettings
    from recognition.verify import verify_lfw as run_verify

    contexts = _contexts(context_values, donors)
    models = _labelled_models(model_specs)
    settings = VerifySettings(  # options: view, metric, limit, device, batch_size, workers, flip, progress
        **options,
        train_pairs=str(train_pairs) if train_pairs else None,
        contexts=contexts,
        donors=str(donors) if donors else None,
    )
    with user_errors():
        report = run_verify(models, root, pairs_path, out, settings, _masking(masking_config))
    _print_verify_report(report, out)


def _contexts(context_values: tuple[str, ...], donors: Path | None) -> list[str]:
    """The --context values, checked; donor contexts need --donors."""
    from recognition.contexts import ContextError, needs_donors, parse_contexts

    try:
        contexts = parse_contexts(context_values)
    except ContextError as exc:
        raise click.BadParameter(str(exc), param_hint="--context") from exc
    if needs_donors(contexts) and donors is None:
        names = ", ".join(c for c in contexts if needs_donors([c]))
        raise click.BadParameter(f"--context {names} needs --donors PATH", param_hint="--donors")
    return contexts


def _labelled_models(model_specs: tuple[str, ...]) -> dict[str, str]:
    """{label: spec}; two models with one label are refused rather than one silently dropped."""
    models = dict(_model_label(spec) for spec in model_specs)
    if len(models) != len(model_specs):
        raise click.BadParameter("two --model share a label; name them NAME=PATH", param_hint="--model")
    return models


def _masking(masking_config: Path | None):
    from augmentor.config import load_config
    from augmentor.faces import MaskingConfig

    with user_errors():
        return load_config(MaskingConfig, masking_config)


def _print_verify_report(report: dict, out: Path) -> None:
    """The alignment counts and one table row per model and context."""
    align = report["alignment"]
    click.echo(
        f"{report['num_pairs']} pairs, {report['num_images']} images "
        f"({align['centre_crop_fallback']} centre-cropped: alignment failed)"
    )
    for context, info in report["contexts"].items():
        if context != "original":
            click.echo(f"context {context}: {info['recontexted']} of {info['images']} second images re-contexted")
    click.echo(
        "| model | context | accuracy (mean ± std) | TPR@FPR=0.01 pooled / fold mean "
        "| TPR@FPR=0.001 pooled / fold mean | AUC |"
    )
    click.echo("|---|---|---:|---:|---:|---:|")
    for name, model in report["models"].items():
        for context, entry in {"original": model, **model["contexts"]}.items():
            tpr, fold = entry["tpr_pooled"], entry["tpr_fold_mean"]
            click.echo(
                f"| {name} | {context} | {entry['accuracy_mean']:.4f} ± {entry['accuracy_std']:.4f} "
                f"| {tpr['0.01']:.4f} / {fold['0.01']:.4f} | {tpr['0.001']:.4f} / {fold['0.001']:.4f} "
                f"| {entry['auc']:.4f} |"
            )
    click.echo(f"wrote {out / 'report.json'} and the ROC plots {out / 'roc*.png'}")


@click.command("compare", context_settings={"show_default": True})
@click.argument("runs", nargs=-1, required=True, metavar="[NAME=]RUN_A [NAME=]RUN_B ...")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Also write the verdict numbers as JSON.",
)
@click.option(
    "--arm",
    "arm_specs",
    multiple=True,
    metavar="NAME=MODEL[,MODEL...]",
    help="Group models (report labels) into an arm: runs of one training set with different seeds. Repeatable. "
    "Default: labels GROUP/ARM-sSEED are grouped by GROUP/ARM.",
)
@click.option(
    "--baseline",
    default="real",
    metavar="ARM",
    help="Arm mode: the arm each other arm of its group is tested against (else the group's first arm).",
)
def compare(runs, json_path, arm_specs, baseline) -> None:
    """Table 2 of the paper from verify-lfw reports, and whether each difference beats the noise.

    Each RUN is a verify-lfw --out folder (or its report.json); a report with several models adds them all, and
    a report made with --context adds a table per context. By model: the first model is the baseline and the
    others are compared with it fold by fold (paired t test and sign test). By arm (labels named ARM-sSEED, e.g.
    pretrained/real-s0, or --arm): each arm is summarised as mean ± std over its seeds and over folds, and tested
    against the baseline arm over seeds (paired by seed when the seeds match, else Welch): gain, loss, or inside
    the noise; under each context, its drop from the original is tested too.

    \b
    Examples:
      augmentor compare real=runs/lfw-table2
      augmentor compare runs/lfw-table2 --json runs/lfw-table2/compare.json
      augmentor compare runs/grid/verify          # models named pretrained/real-s0, pretrained/cascade-s0 ...
      augmentor compare runs/lfw --arm real=a0,a1,a2 --arm hal=b0,b1,b2 --baseline real
    """
    from recognition.arms import compare_arms, uses_arms
    from recognition.compare import compare as run_compare
    from recognition.compare import read_runs

    with user_errors():
        rows = read_runs(list(runs))
        if uses_arms(rows, list(arm_specs)):
            text, tests = compare_arms(rows, list(arm_specs), baseline)
        else:
            text, tests = run_compare(rows)
    click.echo(text)
    if json_path is not None:
        json_path.write_text(json.dumps(tests, indent=2))

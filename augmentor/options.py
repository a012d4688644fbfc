"""Option sets shared by several commands, defined once: every CLI (core, pipelines, recognition) uses these.

Each factory returns a click decorator. Commands differ only in help text or default, which the factories take.
Importing this module imports click alone (and the torch-free :mod:`augmentor.precision` constants and
:mod:`augmentor.cli_errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click

from augmentor.cli_errors import user_errors

DATASET_NAMES = ("casia", "lfw", "celeba", "folder", "list")  # augmentor.datasets registry; a test keeps them equal

Decorator = Callable[[Callable], Callable]


def _stack(*options: Decorator) -> Decorator:
    """One decorator applying ``options`` in the order given (the first is shown first in --help)."""

    def apply(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def folder_option(*decls: str, help: str, metavar: str = "DIR", required: bool = False, default=None) -> Decorator:
    """An option naming an existing folder, passed as a ``Path``."""
    kind = click.Path(exists=True, file_okay=False, path_type=Path)
    return click.option(*decls, type=kind, required=required, default=default, metavar=metavar, help=help)


def file_option(*decls: str, help: str, metavar: str = "FILE", required: bool = False) -> Decorator:
    """An option naming an existing file, passed as a ``Path`` (default None)."""
    kind = click.Path(exists=True, dir_okay=False, path_type=Path)
    return click.option(*decls, type=kind, required=required, default=None, metavar=metavar, help=help)


def int_option(
    *decls: str,
    help: str,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    metavar: str = "N",
) -> Decorator:
    """An integer option, checked to lie in ``[minimum, maximum]`` (an end left None is open)."""
    return click.option(*decls, type=click.IntRange(minimum, maximum), default=default, metavar=metavar, help=help)


def float_option(
    *decls: str,
    help: str,
    default: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    metavar: str = "X",
) -> Decorator:
    """A number option, checked to lie in ``[minimum, maximum]`` (``(minimum, ...`` with ``min_open``)."""
    kind = click.FloatRange(minimum, maximum, min_open=min_open)
    return click.option(*decls, type=kind, default=default, metavar=metavar, help=help)


def choice_option(*decls: str, choices: Sequence[str], help: str, default: str | None = None) -> Decorator:
    """An option taking one of ``choices`` (listed in --help)."""
    return click.option(*decls, type=click.Choice(list(choices)), default=default, help=help)


def dataset_options(command: Callable | None = None, *, default: str | None = None) -> Callable:
    """The options that pick a dataset listing: --dataset, --root and the adapters' own options.

    Use bare (``@dataset_options``: no --dataset means the bundled sample faces) or with a default layout
    (``@dataset_options(default="lfw")``: then --root is required).
    """
    samples = "Omit to use the bundled sample faces." if default is None else ""
    options = _stack(
        click.option(
            "--dataset",
            type=click.Choice(DATASET_NAMES),
            default=default,
            metavar="NAME",
            help=f"Dataset layout: {', '.join(DATASET_NAMES)}. {samples}".strip(),
        ),
        click.option(
            "--root",
            type=click.Path(exists=True, path_type=Path),
            default=None,
            required=default is not None,
            metavar="PATH",
            help="Dataset root folder (for 'list': the TSV/CSV/Parquet list file).",
        ),
        file_option(
            "--identities",
            metavar="TXT",
            help="celeba only: the identity_CelebA.txt file, if it is not next to the images.",
        ),
        click.option(
            "--path-column", default="path", metavar="NAME", help="list only: the column holding image paths."
        ),
        click.option("--identity-column", default="identity", metavar="NAME", help="list only: the identity column."),
    )
    return options if command is None else options(command)


def load_listing(
    dataset: str | None, root: Path | None, identities: Path | None, path_column: str, identity_column: str
):
    """The listing chosen by :func:`dataset_options` (the bundled samples without --dataset).

    Returns:
        ``(dataset name, root, DataFrame)``.

    Raises:
        click.BadParameter / click.ClickException: inconsistent options or an unreadable dataset.
    """
    from augmentor.datasets import load_dataset
    from augmentor.samples import SAMPLES_LIST

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
    with user_errors():
        return dataset, root, load_dataset(dataset, root, **options)


LISTING_PARAMS = ("dataset", "root", "identities", "path_column", "identity_column")  # what dataset_options passes


def pop_listing(options: dict):
    """:func:`load_listing` of the :func:`dataset_options` values among a command's ``**options`` (taken out)."""
    return load_listing(**{name: options.pop(name) for name in LISTING_PARAMS})


def config_options(config_help: str, set_help: str, *, config_param: str = "config_path") -> Decorator:
    """``--config YAML`` and the repeatable ``--set KEY=VALUE`` override, passed as ``config_path, overrides``."""
    return _stack(
        file_option("--config", config_param, metavar="YAML", help=config_help),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=set_help),
    )


def out_dir_option(help: str, *, default: Path | None = None) -> Decorator:
    """``--out DIR``: the folder a command writes into (required unless given a default)."""
    return click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        required=default is None,
        default=default,
        metavar="DIR",
        help=help,
    )


def out_root_option(command: Callable) -> Callable:
    """``--out DIR`` as the parent of a numbered run folder (passed as ``out_root``)."""
    return click.option(
        "--out",
        "out_root",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("runs"),
        metavar="DIR",
        help="Parent folder of the numbered run folder.",
    )(command)


def resume_option(command: Callable) -> Callable:
    """``--resume RUN_DIR`` (passed as ``resume_dir``)."""
    return folder_option(
        "--resume",
        "resume_dir",
        metavar="RUN_DIR",
        help="Continue this run folder from its last finished epoch (its saved config wins).",
    )(command)


def device_option(default: str | None = "auto", help: str = "auto, cpu, cuda, cuda:1 ...") -> Decorator:
    """``--device``."""
    return click.option("--device", default=default, metavar="DEVICE", help=help)


def batch_size_option(default: int | None, help: str, minimum: int = 1) -> Decorator:
    """``--batch-size N``."""
    return click.option("--batch-size", type=click.IntRange(min=minimum), default=default, metavar="N", help=help)


def workers_option(help: str) -> Decorator:
    """``--workers N`` (default: decided by the command)."""
    return click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N", help=help)


def limit_option(help: str, minimum: int = 1) -> Decorator:
    """``--limit N``."""
    return click.option("--limit", type=click.IntRange(min=minimum), default=None, metavar="N", help=help)


def progress_option(help: str = "Show a progress bar.") -> Decorator:
    """``--progress/--no-progress``."""
    return click.option("--progress/--no-progress", default=True, help=help)


def dry_run_option(help: str = "Print the resolved settings, then stop.") -> Decorator:
    """``-n/--dry-run``."""
    return click.option("-n", "--dry-run", is_flag=True, help=help)


def model_option(help: str) -> Decorator:
    """``--model PATH``: one checkpoint folder (default None: the command picks one)."""
    return click.option(
        "--model", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="PATH", help=help
    )


def model_specs_option(help: str, *, metavar: str = "[NAME=]PATH", required: bool = False) -> Decorator:
    """``--model [NAME=]PATH``, repeatable: labelled models to compare (passed as ``model_specs``)."""
    return click.option("--model", "model_specs", multiple=True, required=required, metavar=metavar, help=help)


def donors_option(help: str) -> Decorator:
    """``--donors PATH``: an ``augmentor preprocess`` output folder of donor faces, or its ``donor_bank/``."""
    return folder_option("--donors", metavar="PATH", help=help)


def address_option(command: Callable) -> Callable:
    """``--address``: the Ray cluster to join."""
    return click.option(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join: auto (the cluster `ray start` made on this node), HOST:6379 or ray://HOST:10001. "
        "Default: start a local Ray.",
    )(command)


def seed_option(help: str) -> Decorator:
    """``--seed INT`` (default 0)."""
    return click.option("--seed", type=int, default=0, metavar="INT", help=help)


def precision_option(what: str, *, default: str = "auto") -> Decorator:
    """``--precision``: fp32, bf16 or auto, with the one meaning of auto (:mod:`augmentor.precision`)."""
    from augmentor.precision import PRECISION_HELP, PRECISIONS

    return click.option("--precision", type=click.Choice(PRECISIONS), default=default, help=f"{what} {PRECISION_HELP}")


def next_run_dir(root: Path, desc: str) -> Path:
    """``root/00012-desc``: one more than the highest numbered run folder in ``root``."""
    numbers = (
        [int(p.name.split("-", 1)[0]) for p in root.glob("[0-9]" * 5 + "-*") if p.is_dir()] if root.is_dir() else []
    )
    return root / f"{max(numbers, default=-1) + 1:05d}-{desc}"

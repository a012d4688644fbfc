"""Dataset adapters: list the images of a face data set as an ``(image_id, identity, path)`` table.

Every adapter is registered under a name with :func:`register` and called through :func:`load_dataset`, which checks
the root, validates the options and returns a :class:`pandas.DataFrame` with the columns ``image_id`` (stable and unique
within the data set: the path relative to the data set's base folder, without extension, with forward slashes),
``identity`` (always a string) and ``path`` (absolute), plus any extra columns an adapter keeps, sorted by
``(identity, image_id)``. See ``docs/datasets.md`` for the layouts each adapter understands.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from augmentor.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "identity", "path")
CELEBA_IDENTITY_FILE = "identity_CelebA.txt"
CELEBA_IMAGE_DIRS: tuple[str, ...] = (
    "img_align_celeba",
    "img_celeba",
    "images",
    "Img/img_align_celeba",
    "Img/img_celeba",
)
LIST_FORMATS: dict[str, str] = {".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")

Adapter = Callable[..., "pd.DataFrame"]
DATASETS: dict[str, Adapter] = {}


class DatasetError(InputError):
    """A data set could not be listed: unknown name, bad root, bad option or no images."""


def register(name: str) -> Callable[[Adapter], Adapter]:
    """Register a dataset adapter under ``name``.

    The adapter is called as ``fn(root: Path, **options)`` and returns a DataFrame with at least ``image_id``,
    ``identity`` and ``path``; :func:`load_dataset` does the sorting, typing and uniqueness checks.

    Args:
        name: Registry key (lower case).

    Returns:
        A decorator that registers and returns the function unchanged.
    """

    def decorator(fn: Adapter) -> Adapter:
        if name in DATASETS:
            raise ValueError(f"dataset adapter {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Return the registered dataset names, sorted."""
    return sorted(DATASETS)


def load_dataset(name: str, root: str | os.PathLike[str], **options: object) -> pd.DataFrame:
    """List a data set as a table of ``image_id``, ``identity``, ``path`` (plus any extra columns).

    Args:
        name: A registered adapter name (see :func:`list_datasets`); case-insensitive.
        root: The data set's root folder (for ``list``: the list file).
        **options: Adapter-specific options, e.g. ``identities=`` for ``celeba`` or ``path_column=`` for ``list``.

    Returns:
        A DataFrame sorted by ``(identity, image_id)`` with a fresh RangeIndex.

    Raises:
        DatasetError: Unknown name, missing root, unknown option, malformed input or no images found.
    """
    key = name.strip().lower()
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    adapter = DATASETS[key]
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise DatasetError(f"dataset root does not exist: {root_path}")
    try:
        inspect.signature(adapter).bind(root_path, **options)
    except TypeError as exc:
        raise DatasetError(f"bad options for dataset {key!r}: {exc}") from None
    df = adapter(root_path, **options)
    if len(df) == 0:
        raise DatasetError(f"no images found for dataset {key!r} under {root_path}")
    return _finalize(df)


def as_arrow(df: pd.DataFrame) -> pa.Table:
    """Convert a table from :func:`load_dataset` to a :class:`pyarrow.Table` (index dropped)."""
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def load_dataset_arrow(name: str, root: str | os.PathLike[str], **options: object) -> pa.Table:
    """Same as :func:`load_dataset` but returns a :class:`pyarrow.Table`."""
    return as_arrow(load_dataset(name, root, **options))


def _finalize(df: pd.DataFrame) -> pd.DataFrame:
    """Type the key columns as strings, make ``image_id`` unique, order columns and rows deterministically."""
    df = df.copy()
    for column in REQUIRED_COLUMNS:
        df[column] = df[column].astype(str)
    clash = df["image_id"].duplicated(keep=False)
    if clash.any():  # same stem, different extension (a.jpg + a.png): keep the extension in the id
        df.loc[clash, "image_id"] = df.loc[clash, "image_id"] + df.loc[clash, "path"].map(lambda p: Path(p).suffix)
        if df["image_id"].duplicated().any():
            raise DatasetError("image_id is not unique: " + ", ".join(df["image_id"][df["image_id"].duplicated()][:5]))
    extra = [c for c in df.columns if c not in REQUIRED_COLUMNS]
    df = df[list(REQUIRED_COLUMNS) + extra]
    return df.sort_values(["identity", "image_id"], kind="mergesort").reset_index(drop=True)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _frame(rows: Iterable[tuple[str, str, str]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(REQUIRED_COLUMNS), dtype=object)


def _require_dir(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"dataset root is not a folder: {root}")


def _two_level(root: Path) -> Iterator[tuple[str, str, str]]:
    """Yield ``(image_id, identity, path)`` for ``<root>/<identity>/<image>``; anything else is ignored."""
    base = os.path.abspath(root)
    ignored = 0
    with os.scandir(base) as top:
        identity_dirs = []
        for entry in top:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                identity_dirs.append(entry.name)
            else:
                ignored += _is_image(entry.name)
    for identity in identity_dirs:
        with os.scandir(os.path.join(base, identity)) as files:
            for entry in files:
                if _is_image(entry.name) and not entry.is_dir():
                    yield f"{identity}/{os.path.splitext(entry.name)[0]}", identity, entry.path
    if ignored:
        logger.warning("%d image(s) directly in %s ignored: expected <root>/<identity>/<image>", ignored, base)


@register("casia")
def casia(root: Path) -> pd.DataFrame:
    """CASIA-WebFace: ``<root>/<identity id>/<nnn>.jpg`` (identity folder names kept verbatim, e.g. ``0000045``)."""
    _require_dir(root)
    return _frame(_two_level(root))


@register("lfw")
def lfw(root: Path) -> pd.DataFrame:
    """Labeled Faces in the Wild: ``<root>/<Name>/<Name>_<nnnn>.jpg``."""
    _require_dir(root)
    return _frame(_two_level(root))


@register("folder")
def folder(root: Path) -> pd.DataFrame:
    """Any tree of images; identity = the immediate parent folder's name (the root's own name for top-level files)."""
    _require_dir(root)
    base = os.path.abspath(root)
    rows = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, base).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        identity = os.path.basename(dirpath)
        for name in filenames:
            if _is_image(name):
                rows.append((prefix + os.path.splitext(name)[0], identity, os.path.join(dirpath, name)))
    return _frame(rows)


def files_exist(paths: Iterable[str]) -> list[bool]:
    """Whether each absolute path exists as a file: one directory listing per distinct parent, no per-file stat.

    A parent that does not exist holds no file. One that exists but cannot be listed (no permission, an I/O error
    of a network share) is an error: counting its files as missing would record them so, for good.

    Raises:
        DatasetError: a folder that exists could not be listed.
    """
    listings: dict[str, set[str]] = {}
    out = []
    for path in paths:
        parent, name = os.path.split(path)
        if parent not in listings:
            listings[parent] = _file_names(parent)
        out.append(name in listings[parent])
    return out


def _file_names(folder: str) -> set[str]:
    """The names of the files in ``folder``; none if it does not exist."""
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if not e.is_dir()}
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError as exc:
        raise DatasetError(
            f"cannot list {folder} ({exc.strerror or exc}): fix its permissions or mount, then rerun"
        ) from exc


def _check_missing(df: pd.DataFrame, source: Path, keep: bool) -> pd.DataFrame:
    """Count the listed files not on disk in one warning; keep their rows, or drop them."""
    present = files_exist(df["path"])
    missing = len(present) - sum(present)
    if missing:
        what = "kept (augmentor run records them with status missing)" if keep else "skipped"
        logger.warning("%d of %d file(s) listed in %s are not on disk; %s", missing, len(present), source, what)
    return df if keep else df[present]


def _find_celeba(root: Path, identities: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """Resolve ``(identity file, image folder)`` for the ``celeba`` adapter."""
    if root.is_file():  # root = the identity file itself
        identities, root = identities or root, root.parent
    if identities is not None:
        txt = Path(identities).expanduser()
        if not txt.is_file():
            raise DatasetError(f"CelebA identity file does not exist: {txt}")
    else:
        candidates = [d / sub / CELEBA_IDENTITY_FILE for d in (root, root.parent) for sub in (".", "Anno")]
        txt = next((c for c in candidates if c.is_file()), None)
        if txt is None:
            raise DatasetError(
                f"no {CELEBA_IDENTITY_FILE} in {root}, {root / 'Anno'} or the parent folder; pass identities="
            )
    images = next((root / d for d in CELEBA_IMAGE_DIRS if (root / d).is_dir()), root)
    return txt, images


def _parse_celeba(txt: Path) -> list[tuple[str, str]]:
    """Parse ``<filename> <identity int>`` lines; up to two leading non-matching lines (count, header) are skipped."""
    pairs = []
    with open(txt, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                pairs.append((parts[0], parts[1]))
            elif lineno <= 2 and not pairs:
                logger.debug("skipping header line %d of %s: %r", lineno, txt, line.strip())
            else:
                raise DatasetError(f"{txt}:{lineno}: expected '<filename> <identity>', got {line.strip()!r}")
    return pairs


@register("celeba")
def celeba(root: Path, *, identities: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """CelebA: an image folder plus ``identity_CelebA.txt``; listed files missing on disk are skipped with a warning.

    Args:
        root: The folder holding ``identity_CelebA.txt`` (or ``Anno/identity_CelebA.txt``) and an ``img_align_celeba``,
            ``img_celeba``, ``images`` or ``Img/img_*`` subfolder; or the image folder itself (the txt then in it or in
            its parent); or the txt file itself.
        identities: Explicit path of the identity file; the image folder is then looked up from ``root`` only.
    """
    txt, images = _find_celeba(root, identities)
    base = os.path.abspath(images)
    rows = [
        (os.path.splitext(f)[0].replace("\\", "/"), ident, os.path.join(base, f)) for f, ident in _parse_celeba(txt)
    ]
    logger.info("celeba: identity file %s, image folder %s", txt, base)
    return _check_missing(_frame(rows), txt, keep=False)  # a subset of CelebA's images is normal


def _read_table(path: Path, fmt: str | None, dtypes: dict[str, type]) -> pd.DataFrame:
    import pandas as pd

    if fmt is None:
        suffixes = [s.lower() for s in path.suffixes]
        while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
            suffixes.pop()
        fmt = LIST_FORMATS.get(suffixes[-1] if suffixes else "")
        if fmt is None:
            raise DatasetError(f"cannot tell the format of {path} from its extension; use .tsv, .csv or .parquet")
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt not in ("tsv", "csv"):
        raise DatasetError(f"unknown list format {fmt!r}; expected tsv, csv or parquet")
    sep = "\t" if fmt == "tsv" else ","
    table = pd.read_csv(path, sep=sep, dtype=dtypes)
    # Re-read the key columns verbatim so identities such as "NA" or "null" are not turned into missing values.
    keys = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, usecols=lambda c: c in dtypes)
    for column in keys.columns:
        table[column] = keys[column]
    return table


def _as_str(series: pd.Series) -> pd.Series:
    """Strings, with integral numbers written without a trailing ``.0``."""
    import pandas as pd

    if pd.api.types.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        series = series.astype("Int64")
    return series.astype(object).where(series.notna(), "").astype(str)


@register("list")
def list_file(
    root: Path,
    *,
    path_column: str = "path",
    identity_column: str = "identity",
    format: str | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """A TSV, CSV or Parquet file listing images; extra columns are kept.

    Args:
        root: The list file. Relative paths in it are relative to its folder.
        path_column: Column holding image paths.
        identity_column: Column holding identities (read as strings, leading zeros kept for TSV/CSV).
        format: ``tsv``, ``csv`` or ``parquet``; detected from the extension (optionally compressed) when omitted.
        check_files: Count the rows whose file is not on disk in a warning (the rows are kept: every listed
            input gets a manifest row, status ``missing``, from ``augmentor run``).
    """
    if not root.is_file():
        raise DatasetError(f"list dataset root must be a file: {root}")
    table = _read_table(root, format, {path_column: str, identity_column: str})
    missing = [c for c in (path_column, identity_column) if c not in table.columns]
    if missing:
        raise DatasetError(f"{root} lacks column(s) {missing}; it has {list(table.columns)}")
    clash = [c for c in REQUIRED_COLUMNS if c in table.columns and c not in (path_column, identity_column)]
    if clash:
        raise DatasetError(f"{root} has column(s) {clash}, which this adapter computes; rename them")
    base = os.path.abspath(root.parent)
    rel = _as_str(table[path_column]).str.replace("\\", "/", regex=False)
    empty = (rel == "") | (_as_str(table[identity_column]) == "")
    if empty.any():
        logger.warning("%d row(s) of %s with an empty path or identity skipped", int(empty.sum()), root)
    table, rel = table[~empty], rel[~empty]
    paths = [os.path.normpath(os.path.join(base, p)) for p in rel]
    inside = base.rstrip(os.sep) + os.sep
    ids = [os.path.splitext(p.removeprefix(inside))[0].replace(os.sep, "/") for p in paths]
    df = table.drop(columns=[path_column, identity_column]).copy()
    df.insert(0, "path", paths)
    df.insert(0, "identity", _as_str(table[identity_column]).to_numpy())
    df.insert(0, "image_id", ids)
    dup = df["path"].duplicated()
    if dup.any():
        logger.warning("%d duplicate path(s) in %s skipped", int(dup.sum()), root)
        df = df[~dup]
    return _check_missing(df, root, keep=True) if check_files else df

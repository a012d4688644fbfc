"""Crash-safe writes: a reader sees the old version or the new one, never half of each.

A file is written under a temporary name and renamed into place. A set of folders (a training run's ``last/`` and
``resume/``) is written whole into a staging folder, marked complete, then renamed into place one by one; a save
killed before the mark leaves the old folders untouched, and one killed after it is finished by
:func:`recover_folders`, which every save and every resume calls first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

COMPLETE = "COMPLETE"  # in a staging folder: every folder was written; lists their names, one a line


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` under a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _old(stage: Path) -> Path:
    return stage.with_name(f"{stage.name}.old")


def replace_folders(
    root: str | os.PathLike[str], writers: dict[str, Callable[[Path], object]], stage_name: str = ".staging"
) -> None:
    """Replace the folders ``root/<name>`` by what ``writers[name](folder)`` writes, all of them or none.

    Each writer fills a new folder inside ``root/<stage_name>``; only when all are written is the set marked
    complete and renamed into place. There is no cleanup on failure on purpose: a kill runs none either, and
    :func:`recover_folders` handles both the same way.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recover_folders(root, stage_name)
    stage = root / stage_name
    stage.mkdir()
    for name, write in writers.items():
        write(stage / name)
    write_text(stage / COMPLETE, "".join(f"{name}\n" for name in writers))
    _roll_forward(root, stage)


def _roll_forward(root: Path, stage: Path) -> None:
    """Move every folder of a complete stage into place (the replaced ones via ``<stage>.old``), then tidy up."""
    old = _old(stage)
    for name in (stage / COMPLETE).read_text().splitlines():
        new, target = stage / name, root / name
        if not new.exists():  # moved before a crash
            continue
        if target.exists():
            old.mkdir(exist_ok=True)
            _remove(old / name)
            os.replace(target, old / name)
        os.replace(new, target)
    _remove(old)
    _remove(stage)


def recover_folders(root: str | os.PathLike[str], stage_name: str = ".staging") -> bool:
    """Finish a save that was marked complete, or drop one that was not; True if there was one to handle."""
    stage = Path(root) / stage_name
    if (stage / COMPLETE).is_file():
        _roll_forward(Path(root), stage)
        return True
    found = stage.exists()
    _remove(stage)  # unfinished: the folders in place are the previous save's, whole
    _remove(_old(stage))
    return found


def replace_folder(target: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Replace the one folder ``target`` by what ``write(folder)`` writes (see :func:`replace_folders`)."""
    target = Path(target)
    replace_folders(target.parent, {target.name: write}, stage_name=f".{target.name}.staging")
    return target


def recover_folder(target: str | os.PathLike[str]) -> bool:
    """:func:`recover_folders` for a folder written by :func:`replace_folder`."""
    target = Path(target)
    return recover_folders(target.parent, stage_name=f".{target.name}.staging")

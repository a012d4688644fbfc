"""One writer per output folder: ``preprocess``, ``run``, ``train`` and ``finetune`` hold a lock on theirs.

The lock is ``flock`` on ``<folder>/.augmentor.lock``, which the kernel drops when the process ends, however it
ends: a crashed or killed run never leaves a folder locked. The file stays (deleting it would race with the next
writer) and says who holds the lock, so a second writer is refused with a message that names the running one.
``flock`` is advisory and local: it holds between processes on one machine, and on NFS only where the server
supports it; on systems without ``fcntl`` the lock is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from augmentor.errors import InputError

log = logging.getLogger(__name__)

LOCK_FILE = ".augmentor.lock"


class FolderInUseError(InputError):
    """Another process is writing to the output folder."""


def _holder(path: Path) -> str:
    """Who holds the lock, as its file says."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')}, `{info.get('command')}` started {info.get('started')}"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block.

    Args:
        folder: The output folder.
        command: What writes there, for the message another writer gets (e.g. ``augmentor run``).

    Raises:
        FolderInUseError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        log.warning("no fcntl on this system: %s is not locked against a second writer", folder)
        yield Path(folder)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(
                f"{folder} is in use by {_holder(path)}: wait for it to finish, or use another output folder"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield folder
    finally:
        os.close(fd)  # drops the lock

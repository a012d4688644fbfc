"""How every command turns input a user can fix into a one-line error, defined once for all the CLIs.

:class:`augmentor.errors.InputError` (and its subclasses) and a missing file (``FileNotFoundError``, which
``MissingModelFileError`` is) become a ``click.ClickException``: the message, no traceback. Anything else is a bug
or a resource problem and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from augmentor.errors import InputError

USER_ERRORS: tuple[type[BaseException], ...] = (InputError, FileNotFoundError)


@contextmanager
def user_errors(*also: type[BaseException]) -> Iterator[None]:
    """Inside the block, raise bad input (``USER_ERRORS`` and the types in ``also``) as a ``ClickException``."""
    try:
        yield
    except (*USER_ERRORS, *also) as exc:
        raise click.ClickException(str(exc)) from exc

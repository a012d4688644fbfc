"""The one exception class for input a user can fix: a path, an option, a config value, a data folder.

Library code raises :class:`InputError` (or a subclass: ``ConfigError``, ``DatasetError``, ``CorruptFileError`` ...)
where it checks what the user gave it, and the CLI turns exactly that into a one-line ``click.ClickException``
(:func:`augmentor.cli_errors.user_errors`, used by every command).
Any other ``ValueError``, ``RuntimeError`` or ``KeyError`` is a bug or a resource problem (a shape mismatch, out
of memory) and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input, said in one line that names the file or option and how to fix it.

    A ``ValueError`` so that callers which predate this class still catch it.
    """

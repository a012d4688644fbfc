"""The ``augmentor`` click group. Every subcommand is loaded lazily, by import string, when it is invoked.

The core's own commands are listed in :data:`CORE_COMMANDS`. Layers above the core (``pipelines``, ``recognition``)
add theirs through the ``augmentor.commands`` entry-point group in ``pyproject.toml``, so this module names none of
them and imports nothing from them: the import arrows point one way.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

import click

ENTRY_POINT_GROUP = "augmentor.commands"

CORE_COMMANDS = {
    "preprocess": "augmentor.commands.preprocess:preprocess",
    "train": "augmentor.commands.train:train",
    "export": "augmentor.commands.export:export",
    "pack": "augmentor.commands.pack:pack",
    "evaluate": "augmentor.commands.evaluate:evaluate",
    "export-dataset": "augmentor.commands.export_dataset:export_dataset",
}


def plugin_commands() -> dict[str, str]:
    """``name -> "module:attribute"`` for the commands other installed layers register (nothing is imported)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


class LazyGroup(click.Group):
    """A group whose subcommands are ``"module:attribute"`` strings, imported on first use (click's lazy pattern)."""

    def __init__(self, *args, lazy_subcommands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy_subcommands or {})
        self._plugins_read = False

    def _subcommands(self) -> dict[str, str]:
        if not self._plugins_read:
            for name, target in plugin_commands().items():
                self._lazy.setdefault(name, target)
            self._plugins_read = True
        return self._lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._subcommands()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._subcommands().get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    lazy_subcommands=CORE_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """augmentor: hallucinate context and background around masked faces to grow face-recognition training sets."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()

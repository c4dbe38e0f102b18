"""A click group that imports a command's module only when that command runs.

Start-up time: ``smimekit verify`` must not pay for importing the CA, escrow and archive
command groups (SQLAlchemy, pkilint, rich). The group knows each lazy command's name and help
text, so ``smimekit --help`` lists every command without importing any of them;
``tests/cli/test_startup_imports.py`` checks that the help text here matches the commands'.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from gettext import gettext as _
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    """A command known by name and help until it is needed."""

    name: str
    """The command's name on the command line."""
    target: str
    """``module:attribute`` of the click command."""
    help: str
    """The first paragraph of the command's help, shown (shortened) by the group's --help."""
    extend: tuple[str, ...] = ()
    """``module:attribute`` of lists of commands to add to the group (``target``) on loading."""

    def load(self) -> click.Command:
        command = _resolve(self.target)
        if not isinstance(command, click.Command):  # a wrong table entry: a bug, not user error
            raise TypeError(f"{self.target} is not a click command")
        for more in self.extend:
            if not isinstance(command, click.Group):
                raise TypeError(f"{self.target} is not a click group")
            for subcommand in _resolve(more):
                command.add_command(subcommand)
        return command


def _resolve(target: str) -> Any:
    module_name, _sep, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


class LazyGroup(click.Group):
    """A group whose :class:`LazyCommand` entries are imported on first use."""

    def __init__(self, *args: Any, lazy_commands: Sequence[LazyCommand] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = {spec.name: spec for spec in lazy_commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            command = self.lazy_commands[cmd_name].load()
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, but a command not loaded yet is shown through a stand-in that
        # carries its help text, so click shortens it exactly as it would the real one.
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                command = click.Command(name, help=self.lazy_commands[name].help)
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _cmd in rows)
            with formatter.section(_("Commands")):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])

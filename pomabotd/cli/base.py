"""The command line's own classes: a group that imports a command only when it is used, and a
command that refuses an option given twice.

`pomabotd --version` and `pomabotd --help` must start in about Python's own start time, so
nothing here, nor in a command's module, imports more than click at module level: a command
imports what it runs on (numpy, the engine, HTTP clients) inside its function.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import click

__all__ = ["Command", "LazyGroup"]


class LazyGroup(click.Group):
    """A group whose commands live in modules named by a table (`name -> "module:attribute"`),
    imported when the command is looked up: running one command imports that command's
    module alone, and `--help` imports only the (light) command modules."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, in alphabetical order."""
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command called `cmd_name`, its module imported now; None if there is none."""
        target = self._lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


class Command(click.Command):
    """A command that refuses an option given more than once: only its last value would
    count, silently (`report --out A --out B`). Options meant to repeat say `multiple=True`;
    a flag repeated changes nothing and passes."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Refuse a repeated option (exit 2, naming it), then parse as click does."""
        if not ctx.resilient_parsing:
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
            _refuse_repeated(order)
        return super().parse_args(ctx, args)


def _refuse_repeated(order: Sequence[click.Parameter]) -> None:
    counts = Counter(
        param for param in order
        if isinstance(param, click.Option)
        and not (param.multiple or param.count or param.is_flag)
    )
    for param, times in counts.items():
        if times > 1:
            name = max(param.opts, key=len)
            raise click.UsageError(
                f"{name} is given {times} times; give it once (only one value can count)"
            )

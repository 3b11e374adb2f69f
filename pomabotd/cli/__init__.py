"""The `pomabotd` command line: parse arguments, call into the package, print. No logic here.

`main` is a group whose commands are imported when used (`pomabotd.cli.base.LazyGroup`):
`pomabotd --version` and `pomabotd --help` import click and nothing heavy, and a command
imports what it runs on. A new command is a module in `pomabotd/cli/commands/` and one line
in `_COMMANDS`.
"""

from __future__ import annotations

from typing import Final

import click

from pomabotd._version import __version__
from pomabotd.cli.base import LazyGroup

__all__ = ["main"]

#: Every command: its name -> "module:click command".
_COMMANDS: Final = {
    "config": "pomabotd.cli.commands.config:show_config",
    "evaluate": "pomabotd.cli.commands.evaluate:evaluate",
    "replay": "pomabotd.cli.commands.replay:replay",
    "report": "pomabotd.cli.commands.report:report",
    "resume": "pomabotd.cli.commands.resume:resume",
    "run": "pomabotd.cli.commands.run:run",
    "run-once": "pomabotd.cli.commands.run_once:run_once",
    "status": "pomabotd.cli.commands.status:status",
    "stress": "pomabotd.cli.commands.stress:stress",
    "verify": "pomabotd.cli.commands.verify:verify",
}


@click.group(cls=LazyGroup, lazy=_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pomabotd")
def main() -> None:
    """Prediction-market research and paper trading. It never places real orders."""

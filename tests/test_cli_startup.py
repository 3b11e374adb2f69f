"""The command line starts light: `--version` and `--help` import click and pomabotd's command
line, nothing the commands run on."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import clean_environ

#: Libraries a command runs on, which starting the command line must not pay for.
HEAVY = (
    "aiohttp", "asyncio", "defusedxml", "feedparser", "httpx", "loguru", "matplotlib",
    "msgspec", "numpy", "prometheus_client", "psutil", "tenacity", "tqdm",
)
#: Commands whose `COMMAND --help` is checked too (every one the group lists).
COMMANDS = (
    "config", "evaluate", "replay", "report", "resume", "run", "run-once", "status", "stress",
    "verify",
)


#: Runs `python -m pomabotd ARGS` in this process, then lists every module it imported on
#: stderr after a marker (printing needs no import, so the list is exactly the command's).
_LIST_MODULES = """
import runpy, sys
sys.argv = ["pomabotd", *sys.argv[1:]]
try:
    runpy.run_module("pomabotd", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("--modules--", *sorted(sys.modules), sep="\\n", file=sys.stderr)
"""


def _imported(*args: str) -> set[str]:
    """The modules `python -m pomabotd ARGS` has imported when it exits."""
    result = subprocess.run(
        [sys.executable, "-c", _LIST_MODULES, *args],
        capture_output=True, text=True, timeout=60, env=clean_environ(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stderr.split("--modules--\n", 1)[1].split())


def _heavy(modules: set[str]) -> list[str]:
    """The heavy libraries among `modules`, and pomabotd's own modules outside its command
    line (the engine, the sources, the configuration, the domain)."""
    ours = {"pomabotd", "pomabotd._version"}
    return sorted(
        name for name in modules
        if name.split(".", 1)[0] in HEAVY
        or (name.startswith("pomabotd.") and name not in ours
            and not name.startswith("pomabotd.cli"))
    )


@pytest.mark.parametrize("args", [("--version",), ("--help",)])
def test_version_and_help_import_nothing_heavy(args: tuple[str, ...]):
    """`pomabotd --version` and `pomabotd --help` import click and the command line only."""
    modules = _imported(*args)
    assert "click" in modules and "pomabotd.cli" in modules  # the report is read right
    assert _heavy(modules) == []


def test_version_imports_no_command():
    """`--version` imports no command's module: commands load when they are looked up."""
    assert not any(name.startswith("pomabotd.cli.commands") for name in _imported("--version"))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_commands_help_imports_nothing_heavy(command: str):
    """`pomabotd COMMAND --help` loads that command's module and nothing it runs on."""
    modules = _imported(command, "--help")
    assert f"pomabotd.cli.commands.{command.replace('-', '_')}" in modules
    assert _heavy(modules) == []


def test_the_group_lists_every_command(run_cli):
    """`pomabotd --help` lists exactly the commands whose help this module checks."""
    listing = run_cli("--help").stdout.split("Commands:", 1)[1].strip().splitlines()
    assert tuple(line.split()[0] for line in listing) == COMMANDS

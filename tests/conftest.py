"""Shared fixtures: a fixed `as_of`, the recorded test data, and the real `pomabotd` entry point."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
AS_OF_TEXT = "2026-06-01T12:00:00Z"

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package and the test helpers to bytecode once, before any test starts.

    The tests start hundreds of `python -m pomabotd` processes; where PYTHONDONTWRITEBYTECODE
    is set none of them caches what it compiles, so each compiled the whole package from source
    again (a fifth of a `run-once`'s CPU). Present bytecode is read either way and checked
    against the source's time and size, so an edit still counts.
    """
    if hasattr(config, "workerinput"):
        return  # the xdist controller compiled it before starting this worker
    for directory in (ROOT / "pomabotd", ROOT / "tests"):
        compileall.compile_dir(directory, quiet=2)


_UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests `--dist loadgroup` would not keep with their `xdist_group`.

    pytest-xdist marks a grouped test by a suffix of its node id; where a pytest release
    ignores that (pytest-dev/pytest-xdist#1386) the groups are silently spread over the
    workers, and a module's shared cluster or installation is made once per worker. Such a
    test fails saying so instead."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        if names and not item.nodeid.endswith("@" + "_".join(names)):
            item.stash[_UNGROUPED] = (
                f"pytest-xdist cannot keep xdist_group {names} on one worker with pytest "
                f"{pytest.__version__}: install the test extra's pytest (pip install -e '.[test]')")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a grouped test that runs outside its group (see above)."""
    if _UNGROUPED in item.stash:
        pytest.fail(item.stash[_UNGROUPED], pytrace=False)


def clean_environ() -> dict[str, str]:
    """The test process's environment without any pomabotd setting leaking in."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BATCH_", "POMABOTD_"))
    }


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run `python -m pomabotd ARGS` in a fresh process, in `tmp_path`, with a clean environment."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> (
        subprocess.CompletedProcess[str]
    ):
        environ = clean_environ()
        environ.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "pomabotd", *args],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def _hypothesis_without_deadline() -> None:
    """Property tests judge results, not time: a per-example deadline on a shared, loaded
    machine fails a correct example that merely waited for a core."""
    from hypothesis import settings

    settings.register_profile("pomabotd", deadline=None)
    settings.load_profile("pomabotd")


_hypothesis_without_deadline()

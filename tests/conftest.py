"""Shared fixtures: a fixed `as_of`, the recorded test data, and the real `pomabotd` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
AS_OF_TEXT = "2026-06-01T12:00:00Z"

RunCli = Callable[..., subprocess.CompletedProcess[str]]


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

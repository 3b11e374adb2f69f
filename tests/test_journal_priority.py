"""Log lines on the journal's stream carry their sd-daemon priority, and nowhere else.

systemd sets `JOURNAL_STREAM=DEVICE:INODE` for a service whose stderr is connected to the
journal; these tests make a real pomabotd process's stderr a file and set the variable to that
file's device and inode (as `fstat` gives them), which is exactly what pomabotd checks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from conftest import clean_environ

from pomabotd.log import journal_prefix, logger

#: The sd-daemon priority of each loguru level name pomabotd logs at.
PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "SUCCESS": 5, "INFO": 6, "DEBUG": 7,
            "TRACE": 7}
_PREFIXED = re.compile(r"^<(\d)>(.*)$")


@contextmanager
def _pomabotd(workdir: Path, *args: str, journal: str | None, env: dict[str, str] | None = None
              ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m pomabotd ARGS` with stderr in a file; `journal` is `same` (JOURNAL_STREAM
    names that file), `other` (it names another file), or None (unset). The process and
    everything it started are killed by pid on the way out, and none may be left."""
    stderr_path = workdir / "stderr.log"
    other = workdir / "other.log"
    other.touch()
    environ = clean_environ()
    environ.pop("JOURNAL_STREAM", None)
    environ.update(env or {})
    with stderr_path.open("wb") as stderr:
        named = os.fstat(stderr.fileno()) if journal == "same" else os.stat(other)
        if journal is not None:
            environ["JOURNAL_STREAM"] = f"{named.st_dev}:{named.st_ino}"
        process = subprocess.Popen([sys.executable, "-m", "pomabotd", *args], cwd=workdir,
                                   env=environ, stdout=subprocess.DEVNULL, stderr=stderr)
        seen: list[psutil.Process] = []
        try:
            yield process, stderr_path
        finally:
            if process.poll() is None:
                seen = psutil.Process(process.pid).children(recursive=True)
                process.kill()
            process.wait(timeout=30)
            for child in seen:
                if child.is_running():
                    child.kill()
            assert not [c for c in seen if c.is_running() and c.status() != "zombie"]


def _priorities(text: str) -> list[tuple[int, dict[str, object]]]:
    """Each line's priority and JSON record; a line without a prefix fails the test."""
    found = []
    for line in text.splitlines():
        match = _PREFIXED.match(line)
        assert match, f"line without a priority prefix: {line!r}"
        found.append((int(match.group(1)), json.loads(match.group(2))))
    return found


def test_a_service_daemon_prefixes_every_line_with_its_priority(tmp_path: Path) -> None:
    """A daemon whose stderr is the journal's stream writes `<3>` before its errors (a failing
    cycle), `<4>` before warnings and `<6>` before info lines, so that `journalctl -p err`
    finds the errors."""
    (tmp_path / "bad.jsonl").write_text("not a market\n")
    args = ("run", "--markets", "bad.jsonl", "--interval", "0.2",
            "--status-addr", "", "--out", "out")
    with _pomabotd(tmp_path, *args, journal="same",
                   env={"BATCH_WORKERS": "0", "BATCH_BOGUS": "1"}) as (process, stderr):
        deadline = time.monotonic() + 60
        while '"level":"ERROR"' not in stderr.read_text():
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        lines = _priorities(stderr.read_text())
    assert all(priority == PRIORITY[str(record["level"])] for priority, record in lines)
    events = {(priority, record["event"]) for priority, record in lines}
    assert {(3, "cycle_failed"), (4, "config_warning"), (6, "start"), (6, "stop")} <= events


def test_every_level_has_its_sd_daemon_priority() -> None:
    """Each loguru level maps to the syslog priority of the same meaning, and a level of
    another number to the priority of the level below it."""
    assert {name: journal_prefix(logger.level(name).no) for name in PRIORITY} == {
        name: f"<{priority}>" for name, priority in PRIORITY.items()
    }
    assert journal_prefix(45) == "<3>" and journal_prefix(5) == "<7>"


def test_text_lines_and_a_refused_configuration_carry_the_priority_too(tmp_path: Path) -> None:
    """Text log lines on the journal's stream start with `<6>`, and an error that ends a
    command (a configuration refused, exit 2) with `<3>` on each of its lines."""
    with _pomabotd(tmp_path, "run-once", "--out", "out", journal="same",
                   env={"BATCH_WORKERS": "0", "POMABOTD_LOG_FORMAT": "text"}) as (process, err):
        assert process.wait(timeout=90) == 0
        lines = err.read_text().splitlines()
    assert lines and all(line.startswith("<6>") for line in lines), lines
    assert re.match(r"<6>\d{4}-\d\d-\d\dT[\d:.]+\+00:00 INFO +cycle 1 done", lines[-1])
    refused = {"BATCH_WORKERS": "-1", "BATCH_SIZE": "0"}
    with _pomabotd(tmp_path, "run-once", "--out", "out", journal="same", env=refused) as (
        process, err
    ):
        assert process.wait(timeout=90) == 2
        lines = err.read_text().splitlines()
    assert lines[0] == "<3>Error: 2 configuration errors:"
    assert len(lines) == 3 and all(line.startswith("<3>  - batch.") for line in lines[1:])


@pytest.mark.parametrize("journal", ["other", None], ids=["names another file", "unset"])
def test_no_prefix_off_the_journal(tmp_path: Path, journal: str | None) -> None:
    """With JOURNAL_STREAM unset, or naming another file than stderr (a child of a service
    whose output was redirected), lines are plain JSON and errors plain text."""
    with _pomabotd(tmp_path, "run-once", "--out", "out", journal=journal,
                   env={"BATCH_WORKERS": "0", "BATCH_BOGUS": "1"}) as (process, err):
        assert process.wait(timeout=90) == 0
        lines = err.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["level"] for r in records] == ["WARNING", "INFO"]
    with _pomabotd(tmp_path, "run-once", "--out", "out", journal=journal,
                   env={"BATCH_WORKERS": "-1"}) as (process, err):
        assert process.wait(timeout=90) == 2
        assert err.read_text().startswith("Error: batch.workers must be")

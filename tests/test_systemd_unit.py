"""The shipped systemd unit, checked with systemd's own analyzer as an operator would."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "pomabotd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args, str(UNIT)], capture_output=True, text=True,
                          timeout=120)


@needs_analyze
def test_unit_verifies_with_only_the_missing_executable_reported() -> None:
    """`systemd-analyze verify` finds nothing wrong but the executable a build machine lacks
    (its exit status alone would hide a bad value, so its output is read)."""
    result = _analyze("verify")
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    unexpected = [line for line in complaints
                  if not re.search(r"Command /\S+/pomabotd is not executable", line)]
    assert unexpected == []


@needs_analyze
def test_unit_exposure_is_two_or_lower() -> None:
    """`systemd-analyze security --offline=true` rates the hardened unit 2.0 or lower."""
    result = _analyze("security", "--offline=true")
    found = re.search(r"Overall exposure level for pomabotd\.service: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0


def test_unit_has_what_the_daemon_relies_on() -> None:
    """Type=notify with a watchdog, reload by SIGHUP, restart limits, an optional env file,
    and a stop timeout above the daemon's default stop_timeout_s of 10 s."""
    text = UNIT.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify" and int(settings["WatchdogSec"]) > 0
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # The install script puts it in its own virtual environment (pip refuses the system's).
    assert settings["ExecStart"].startswith("/opt/pomabotd/bin/pomabotd run ")
    assert settings["Restart"] == "on-failure" and "StartLimitBurst" in settings
    assert settings["RestartPreventExitStatus"] == "2"  # a configuration error is not retried
    assert settings["EnvironmentFile"].startswith("-")
    assert int(settings["TimeoutStopSec"]) > 10
    assert settings["CapabilityBoundingSet"] == "" and settings["UMask"] == "0027"
    assert int(settings["LimitNOFILE"]) >= 16384  # well above systemd's soft 1,024

"""Helpers of the replay and report tests: the CLI in its own session, and PNG checks."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil

__all__ = ["TESTS", "assert_png", "finish_alone", "run_alone", "start_alone"]

TESTS = Path(__file__).parent
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def start_alone(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start `python -m pomabotd ARGS` as the leader of a new session, without the test
    process's pomabotd settings; end it with `finish_alone`."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BATCH_") and key != "POMABOTD_CONFIG"
    }
    environ.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "pomabotd", *args],
        cwd=cwd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )


def finish_alone(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Wait for a `start_alone` process (killing it after 90 s), and assert that no process of
    its session (workers, the fork server) outlives it."""
    try:
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    deadline = time.monotonic() + 2.0  # a worker may take a moment to be reaped
    while True:
        leftovers = [p for p in psutil.process_iter(["pid", "status"])
                     if _session(p.pid) == process.pid
                     and p.info["status"] != psutil.STATUS_ZOMBIE]
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert leftovers == [], f"left behind: {leftovers}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_alone(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pomabotd ARGS` as the leader of a new session to its end, and assert
    that no process of that session outlives it."""
    return finish_alone(start_alone(cwd, *args, env=env))


def assert_png(path: Path) -> None:
    """A valid PNG of a drawn figure: right signature and size, neither blank nor a solid block,
    with the many colours of text, lines and anti-aliasing."""
    import numpy as np
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == _PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300
    pixels = imread(path)
    assert pixels.shape[:2] == (height, width)
    ink = (pixels[..., :3] < 0.85).any(axis=2).mean()
    assert 0.01 < ink < 0.6, f"{path}: {ink:.1%} of the pixels are drawn"
    rgb = (pixels[..., :3] * 255).astype(np.uint32)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(colours) > 20


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None

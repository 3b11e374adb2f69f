"""Helpers of the replay and report tests: the CLI in its own session, and PNG checks."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import psutil

__all__ = ["TESTS", "assert_png", "run_alone"]

TESTS = Path(__file__).parent
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_alone(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pomabotd ARGS` as the leader of a new session, and assert that no process
    of that session (workers, the fork server) outlives it."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BATCH_") and key != "POMABOTD_CONFIG"
    }
    environ.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "pomabotd", *args],
        cwd=cwd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    leftovers = [p for p in psutil.process_iter(["pid"]) if _session(p.pid) == process.pid]
    assert leftovers == [], f"left behind: {leftovers}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


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

"""A plugin whose module kills the process that imports it: every fresh worker dies at once."""

from __future__ import annotations

import os
import signal

os.kill(os.getpid(), signal.SIGKILL)


def evaluate_market(*args: object) -> None:
    """Never reached."""

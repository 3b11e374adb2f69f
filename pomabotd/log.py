"""The only place that configures loguru: human lines on stderr, nothing on stdout.

stdout belongs to command output (evaluations, JSON summaries) so it stays machine-readable.
"""

from __future__ import annotations

import sys

from loguru import logger

__all__ = ["configure_logging", "logger"]

_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <8} {message}"


def configure_logging(level: str = "INFO") -> None:
    """Send log records at `level` and above to stderr, replacing any earlier setup."""
    logger.remove()
    logger.add(sys.stderr, level=level, format=_FORMAT, backtrace=False, diagnose=False)

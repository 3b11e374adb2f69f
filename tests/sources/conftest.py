"""Fixtures of the source tests (defined in `support`)."""

from __future__ import annotations

from .support import log_lines, raw_server

__all__ = ["log_lines", "raw_server"]

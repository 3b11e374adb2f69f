"""Adapters for the outside systems that feed a cycle: files, synthetic data, live APIs, feeds.

The public face is `open_sources(config) -> Sources`: built once from the configuration and
kept, `await sources.load(as_of)` gives each cycle's `CycleInput` (wire-format JSON lines, the
refused records, and counts of what failed), `await sources.aclose()` releases connections.
A bad record becomes a `Rejected` value naming the record and field, never an exception.
"""

from __future__ import annotations

from pomabotd.sources.base import CycleInput, SourceStats
from pomabotd.sources.registry import Sources, open_sources

__all__ = ["CycleInput", "SourceStats", "Sources", "open_sources"]

"""How pomabotd writes a count for people: `1 position`, `2 positions`, `1,000 markets`.

One helper for every summary, log message and error, so that no line reads `1 cycles`. Files
keep plain numbers.
"""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, singular: str, many: str | None = None) -> str:
    """`count` with thousands separators and the noun that fits it: `singular` for exactly
    one, else `many` (default: `singular` + "s"; give it for `1 opportunity`/`2 opportunities`)."""
    noun = singular if count == 1 else (many if many is not None else singular + "s")
    return f"{count:,} {noun}"

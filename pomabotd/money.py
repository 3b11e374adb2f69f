"""How pomabotd writes an amount of money for people: `$1,234.50`, `-$2,000.00`.

One formatter for every summary, status line and plot, so a loss reads the same everywhere
(never `$-2,000.00`). Files keep plain numbers (USD, rounded to cents).
"""

from __future__ import annotations

__all__ = ["usd"]


def usd(value: float, *, cents: bool = True) -> str:
    """Dollars with thousands separators and, unless `cents` is false (an axis's ticks), cents;
    a minus sign before the dollar sign; an amount that rounds to zero has no sign."""
    digits = 2 if cents else 0
    amount = round(value, digits)
    text = f"{abs(amount):,.{digits}f}"
    return f"-${text}" if amount < 0 else f"${text}"

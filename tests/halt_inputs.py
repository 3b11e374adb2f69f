"""Input lines of the halt sequence the halt and notification tests run (see `test_halt`):
markets that open, then close `invalidated` three in a row."""

from __future__ import annotations

import json

__all__ = ["THREE", "market_line", "signal_lines"]

#: The three markets that open in the first cycle and trip the streak rule in the second.
THREE = (("a", "politics"), ("b", "sports"), ("c", "weather"))


def market_line(market_id: str, category: str, price: float, question: str = "") -> str:
    """One market's JSONL line (question `Will ID happen?` unless given)."""
    return json.dumps({"id": market_id, "question": question or f"Will {market_id} happen?",
                       "category": category, "price": price, "liquidity": 5000,
                       "closes_at": "2026-12-01T00:00:00Z"}) + "\n"


def signal_lines(market_id: str, direction: str, *times: str) -> str:
    """Strength-5 authoritative signals about one market, at these `HH:MM` of 2026-06-01."""
    return "".join(
        json.dumps({"market_id": market_id, "type": "authoritative", "direction": direction,
                    "strength": 5, "timestamp": f"2026-06-01T{t}:00Z"}) + "\n"
        for t in times
    )

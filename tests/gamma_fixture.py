"""The resolved Gamma fixture of docs/research.md's prior comparison, built from the real sample.

`data/gamma/markets_sample_50.json` holds 50 real Polymarket Gamma objects; 25 of them were open
when recorded, so their prices are real crowd prices but their outcomes are unknown. The
fixture resolves those 25 by one fixed rule:

- `price_7d` is the YES price they were recorded at, `outcomePrices[0]` as Gamma wrote it (0-1,
  a numeric string): the price 7 days before close;
- the outcome is drawn with that price as the chance of YES (`random.Random(SEED)`, in file
  order), so the fixture's crowd is calibrated by construction;
- `closed` becomes true and `outcomePrices` the settlement, `["1", "0"]` or `["0", "1"]`.

Its signals file gives each market two neutral authoritative signals (strength 3 and 2) an hour
before its evaluation time: they lift confidence to 70 without moving the belief, so what the
replay decides depends on the prior and the price alone.

`python tests/gamma_fixture.py` rewrites both files; a test checks the committed ones match.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["FIXTURE", "SAMPLE", "SEED", "SIGNALS", "build"]

DATA = Path(__file__).parent / "data" / "gamma"
SAMPLE = DATA / "markets_sample_50.json"
FIXTURE = DATA / "resolved_sample_25.json"
SIGNALS = DATA / "resolved_sample_25_signals.jsonl"
SEED = 7
DAYS = 7


def build() -> tuple[str, str]:
    """The fixture's JSON array and its signals as JSON lines."""
    rng = random.Random(SEED)
    records: list[dict[str, Any]] = []
    signals: list[str] = []
    for record in json.loads(SAMPLE.read_text()):
        if record.get("closed"):
            continue
        recorded = json.loads(record["outcomePrices"])[0]
        yes = rng.random() * 100.0 < round(float(recorded) * 100.0, 6)
        resolved = dict(record, closed=True, price_7d=recorded,
                        outcomePrices=json.dumps(["1", "0"] if yes else ["0", "1"]))
        records.append(resolved)
        closes = datetime.fromisoformat(record["endDate"].replace("Z", "+00:00"))
        when = (closes - timedelta(days=DAYS, hours=1)).isoformat().replace("+00:00", "Z")
        signals += [
            json.dumps({"market_id": str(record["id"]), "type": "authoritative",
                        "direction": "neutral", "strength": strength, "timestamp": when})
            for strength in (3, 2)
        ]
    return json.dumps(records, indent=1, ensure_ascii=False) + "\n", "\n".join(signals) + "\n"


if __name__ == "__main__":
    fixture, signals_text = build()
    FIXTURE.write_text(fixture)
    SIGNALS.write_text(signals_text)

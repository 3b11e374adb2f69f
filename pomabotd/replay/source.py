"""Resolved markets for a replay, with the price each had D days before it closed.

`load_resolved` is the one place where a replay's market source is chosen. Today it reads
JSON-lines files in the SPEC's Market format; a saved Polymarket snapshot (`gamma:PATH`) is
refused with a message until its mapping onto markets exists, and belongs here when it does.

A markets file may carry one price per horizon, `price_<N>d` (points, 0-100): the YES price `N`
whole days before `closes_at`, e.g. `price_1d`, `price_3d`, `price_7d`. A replay `D` days before
closing uses `price_<D>d` when the record has it, else `price`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec

from pomabotd.domain.models import Market, Side, Signal
from pomabotd.errors import InputError
from pomabotd.sources.jsonl import read_bytes
from pomabotd.wire import Rejected, decode_markets, decode_signals

__all__ = ["GAMMA_PREFIX", "ResolvedInput", "ResolvedMarket", "horizon_field", "load_resolved"]

GAMMA_PREFIX: Final = "gamma:"
_SYNTHETIC: Final = "synthetic"
_BOM: Final = b"\xef\xbb\xbf"


class ResolvedMarket(msgspec.Struct, frozen=True, kw_only=True):
    """A market as recorded after it resolved, with its line in the source, its outcome and
    close, the time it is evaluated at (`closes_at - D days`) and its price at that horizon
    when the record gives one."""

    market: Market
    line: int
    outcome: Side
    closes_at: datetime
    evaluated_at: datetime
    horizon_price: float | None


class ResolvedInput(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay reads: the markets it can score, their signals, and what it left out.

    `records` counts valid market records; of those, `no_closes_at` lack `closes_at` (so they
    have no evaluation time) and `unresolved` lack an `outcome`, and neither kind is replayed.
    """

    markets: tuple[ResolvedMarket, ...]
    signals: tuple[Signal, ...]
    markets_source: str
    signals_source: str
    rejected: tuple[Rejected, ...]
    records: int
    no_closes_at: int
    unresolved: int


def horizon_field(days: int) -> str:
    """The name of the field holding the price `days` days before closing: `price_7d`."""
    return f"price_{days}d"


def load_resolved(markets: str, signals: str, days: int) -> ResolvedInput:
    """Read the markets named by `markets` and the signals file `signals` (may be empty).

    Raises InputError when the source cannot be replayed at all (missing file, a source with
    no outcomes); a single bad record is a `Rejected` value and the rest still replays.
    """
    if markets.startswith(GAMMA_PREFIX):
        raise InputError(
            f"{markets}: replaying saved Polymarket snapshots is not supported yet; "
            "give a JSON-lines file of resolved markets (SPEC section 2, with outcome)"
        )
    if markets == _SYNTHETIC:
        raise InputError(
            "replay needs resolved markets: a JSON-lines file whose markets carry outcome and "
            "closes_at, not the synthetic source"
        )
    data = read_bytes(Path(markets))
    decoded, rejected = decode_markets(data, markets)
    horizons, refused = _horizon_prices(data, markets, days, {r.line for r in rejected})
    rejected.extend(refused)
    bad_horizon = {r.line for r in refused}
    back = timedelta(days=days)
    kept: list[ResolvedMarket] = []
    records = no_closes_at = unresolved = 0
    for market, (line, price) in zip(decoded, horizons, strict=True):
        if line in bad_horizon:
            continue
        closes_at, outcome = market.closes_at, market.outcome
        if closes_at is None:
            no_closes_at += 1
        elif outcome is None:
            unresolved += 1
        else:
            try:
                evaluated_at = closes_at - back
            except OverflowError:
                rejected.append(Rejected(
                    markets, line, "closes_at",
                    f"{closes_at.isoformat()} is too early to go back {days} days",
                ))
                continue
            kept.append(ResolvedMarket(
                market=market, line=line, outcome=outcome, closes_at=closes_at,
                evaluated_at=evaluated_at, horizon_price=price,
            ))
        records += 1
    rejected.sort(key=lambda r: r.line)
    signal_records: list[Signal] = []
    signals_source = signals or "no signals"
    if signals:
        signal_records, signal_rejected = decode_signals(read_bytes(Path(signals)), signals)
        rejected.extend(signal_rejected)
    return ResolvedInput(
        markets=tuple(kept),
        signals=tuple(signal_records),
        markets_source=markets,
        signals_source=signals_source,
        rejected=tuple(rejected),
        records=records,
        no_closes_at=no_closes_at,
        unresolved=unresolved,
    )


def _horizon_prices(
    data: bytes, source: str, days: int, bad_lines: set[int]
) -> tuple[list[tuple[int, float | None]], list[Rejected]]:
    """`(line, price at the horizon)` of every market `decode_markets` kept, in its order.

    The lines it refused are skipped, and so is a repeated id after its first line, exactly as
    `decode_markets` does, so the two lists line up. A horizon price that is not a number from
    0 to 100 refuses its market with the field named.
    """
    field = horizon_field(days)
    decoder = msgspec.json.Decoder(
        msgspec.defstruct("Horizon", [("id", Any, None), (field, Any, None)])
    )
    found: list[tuple[int, float | None]] = []
    refused: list[Rejected] = []
    seen: set[str] = set()
    for index, line in enumerate(data.removeprefix(_BOM).split(b"\n")):
        number = index + 1
        if number in bad_lines or not line.strip():
            continue
        record: Any = decoder.decode(line)  # `decode_markets` accepted it: an object
        if record.id in seen:
            continue
        seen.add(record.id)
        value = getattr(record, field)
        if value is not None and not _is_points(value):
            refused.append(
                Rejected(source, number, field, f"expected a number from 0 to 100, got {value!r}")
            )
        found.append((number, None if value is None else float(value)))
    return found, refused


def _is_points(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 100.0
    )

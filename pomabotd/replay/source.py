"""Resolved markets for a replay, with the price each had D days before it closed.

`load_resolved` is the one place where a replay's market source is chosen:

- `synthetic`: the living world's markets that resolved in the days before the replay's time,
  each with its price `D` days before its close (`pomabotd.replay.world`);
- a JSON-lines file of markets (the fields of docs/files.md#inputs), with `outcome`;
- `gamma:PATH`, a saved Polymarket Gamma JSON array, read through the sources' own mapping
  (`pomabotd.sources.gamma.map_records`): a closed market priced 1/0 resolved YES, 0/1 NO, and
  a record the mapping refuses is listed like any rejected record.

A record may carry one price per horizon, `price_<N>d`: the YES price `N` whole days before
`closes_at`, e.g. `price_1d`, `price_3d`, `price_7d`. Each source states it in its own unit, as
it states `price`: a JSON-lines record in points (0-100, like its `price`), a Gamma object in
Gamma's 0-1 (a number or a numeric string, like its `outcomePrices`), mapped to points the same
way (`pomabotd.sources.gamma.price_points`); a Gamma value above 1 is refused, named as the
points it surely is. A replay `D` days before closing uses `price_<D>d` when the record has
it. A resolved record without it is skipped and counted (`no_horizon_price`), from either
source: a resolved record's `price` is usually its last one, at or near the settlement (a
Gamma object's `outcomePrices` are the settlement, 1/0 or 0/1), and evaluating at it would
hand the evaluator the outcome. Only `price_fallback` (`replay --price-fallback`), the user's
word that a JSON-lines file's `price` was recorded before resolution, lets such a record be
evaluated at its `price`; it is refused for Gamma snapshots, whose prices cannot be that.
Either way the count comes with a warning.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeGuard

import msgspec

from pomabotd.domain.models import Market, Side, Signal
from pomabotd.errors import InputError
from pomabotd.sources.gamma import SCHEME as GAMMA_PREFIX
from pomabotd.sources.gamma import map_records, price_points, read_snapshot
from pomabotd.sources.jsonl import read_bytes
from pomabotd.sources.synthetic import NAME as SYNTHETIC
from pomabotd.sources.world import World
from pomabotd.wire import Rejected, decode_markets, decode_signals

__all__ = ["GAMMA_PREFIX", "ResolvedInput", "ResolvedMarket", "horizon_field", "load_resolved"]

#: Sources of open markets, which cannot be replayed (`synthetic` can, given its world).
_NOT_RESOLVED: Final = (SYNTHETIC, "polymarket")
#: A YES price at or above this (or a NO price at or below 100 minus it) is a settled price.
_SETTLED_YES: Final = 99.0
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

    Markets and signals are counted apart. `records` counts valid market records; of those,
    `no_closes_at` lack `closes_at` (so they have no evaluation time), `unresolved` lack an
    `outcome`, and `no_horizon_price` are resolved records without a price at the horizon;
    none of them is replayed. `price_fallbacks` are those replayed at their `price` instead,
    as `price_fallback` allows. `markets_rejected` are the market records refused (invalid);
    `signal_records` counts the valid signal lines and `signals_rejected` lists the refused
    ones. `warnings` say, one line each, what the user should know before trusting figures.
    """

    markets: tuple[ResolvedMarket, ...]
    signals: tuple[Signal, ...]
    markets_source: str
    signals_source: str
    markets_rejected: tuple[Rejected, ...]
    records: int
    no_closes_at: int
    unresolved: int
    no_horizon_price: int = 0
    signals_rejected: tuple[Rejected, ...] = ()
    signal_records: int = 0
    price_fallbacks: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def rejected(self) -> tuple[Rejected, ...]:
        """Every refused record, the markets' first, each list in file order."""
        return (*self.markets_rejected, *self.signals_rejected)


class _Row(msgspec.Struct, frozen=True, kw_only=True):
    """A valid market record: its line (or position in a JSON array) and horizon price."""

    market: Market
    line: int
    horizon_price: float | None


def horizon_field(days: int) -> str:
    """The name of the field holding the price `days` days before closing: `price_7d`."""
    return f"price_{days}d"


def load_resolved(
    markets: str,
    signals: str,
    days: int,
    *,
    price_fallback: bool = False,
    world: World | None = None,
    as_of: datetime | None = None,
) -> ResolvedInput:
    """Read the markets named by `markets` and the signals file `signals` (may be empty).

    `price_fallback` evaluates a JSON-lines record without `price_<days>d` at its `price`
    (module docstring). `synthetic` replays the markets of `world` that resolved before `as_of`
    (`pomabotd.replay.world`), with the file's signals instead of the world's news when
    `signals` names one. Raises InputError when the source cannot be replayed at all (missing
    file, a source with no outcomes, a fallback asked of a Gamma snapshot or of the world); a
    single bad record is a `Rejected` value and the rest still replays.
    """
    if markets == SYNTHETIC and world is not None and as_of is not None:
        return _world_resolved(world, as_of, days, signals, price_fallback)
    if markets in _NOT_RESOLVED:
        raise InputError(
            "replay needs resolved markets: a JSON-lines file whose markets carry outcome and "
            f"closes_at, gamma:PATH or synthetic, not the {markets} source"
        )
    gamma = markets.startswith(GAMMA_PREFIX)
    if gamma and price_fallback:
        raise InputError(
            f"--price-fallback cannot apply to {markets}: a resolved Gamma object's prices are "
            f"its settlement (1/0 or 0/1); give each record {horizon_field(days)} instead"
        )
    if gamma:
        markets_source = markets.removeprefix(GAMMA_PREFIX)
        rows, rejected = _gamma_rows(Path(markets_source), days)
    else:
        markets_source = markets
        rows, rejected = _jsonl_rows(markets, days)
    back = timedelta(days=days)
    kept: list[ResolvedMarket] = []
    records = no_closes_at = unresolved = no_horizon_price = fallbacks = settled = 0
    for row in rows:
        market, line, price = row.market, row.line, row.horizon_price
        closes_at, outcome = market.closes_at, market.outcome
        if closes_at is None:
            no_closes_at += 1
        elif outcome is None:
            unresolved += 1
        elif price is None and not price_fallback:
            no_horizon_price += 1
        else:
            if price is None:
                fallbacks += 1
                settled += _at_settlement(market.price, outcome)
            try:
                evaluated_at = closes_at - back
            except OverflowError:
                rejected.append(Rejected(
                    source=markets, line=line, field="closes_at",
                    message=f"{closes_at.isoformat()} is too early to go back {days} days",
                ))
                continue
            kept.append(ResolvedMarket(
                market=market, line=line, outcome=outcome, closes_at=closes_at,
                evaluated_at=evaluated_at, horizon_price=price,
            ))
        records += 1
    rejected.sort(key=lambda r: r.line)
    signal_records: list[Signal] = []
    signal_rejected: list[Rejected] = []
    signals_source = signals or "no signals"
    if signals:
        signal_records, signal_rejected = decode_signals(read_bytes(Path(signals)), signals)
    return ResolvedInput(
        markets=tuple(kept),
        signals=tuple(signal_records),
        markets_source=markets_source,
        signals_source=signals_source,
        markets_rejected=tuple(rejected),
        records=records,
        no_closes_at=no_closes_at,
        unresolved=unresolved,
        no_horizon_price=no_horizon_price,
        signals_rejected=tuple(signal_rejected),
        signal_records=len(signal_records),
        price_fallbacks=fallbacks,
        warnings=_horizon_warnings(
            markets_source, gamma, days, no_horizon_price, fallbacks, settled
        ),
    )


def _world_resolved(
    world: World, as_of: datetime, days: int, signals: str, price_fallback: bool
) -> ResolvedInput:
    """The world's resolved markets, with the signals file's records instead of its news when
    one is named."""
    from pomabotd.replay.world import world_resolved

    if price_fallback:
        raise InputError(
            f"--price-fallback cannot apply to {SYNTHETIC}: the world knows every market's price "
            f"{days} days before its close"
        )
    resolved = world_resolved(world, as_of, days)
    if not signals:
        return resolved
    records, refused = decode_signals(read_bytes(Path(signals)), signals)
    return msgspec.structs.replace(
        resolved, signals=tuple(records), signals_source=signals,
        signals_rejected=tuple(refused), signal_records=len(records),
    )


def _at_settlement(price: float, outcome: Side) -> bool:
    """Whether a YES price sits where the market settled: 99 or more for YES, 1 or less for
    NO; such a `price` was surely recorded at or after resolution."""
    return price >= _SETTLED_YES if outcome == "YES" else price <= 100.0 - _SETTLED_YES


def _horizon_warnings(
    source: str, gamma: bool, days: int, missing: int, fallbacks: int, settled: int
) -> tuple[str, ...]:
    """What to say about records without a price at the horizon (module docstring)."""
    field = horizon_field(days)
    warnings: list[str] = []
    if missing:
        why = (
            "a resolved Gamma object's prices are its settlement" if gamma
            else "a resolved record's price is usually its last one, near the settlement"
        )
        remedy = "" if gamma else (
            f", or --price-fallback if the file's price was recorded {days} days before closing"
        )
        warnings.append(
            f"{source}: {missing} resolved records without {field} skipped ({why}); give them "
            f"{field}{remedy}"
        )
    if fallbacks:
        suspicious = (
            f"; {settled} of them sit at the settled price (99 or more on the side that won), "
            "which hands the outcome to the evaluator" if settled else ""
        )
        warnings.append(
            f"{source}: {fallbacks} resolved records without {field} evaluated at their price "
            f"(--price-fallback){suspicious}"
        )
    return tuple(warnings)


def _jsonl_rows(markets: str, days: int) -> tuple[list[_Row], list[Rejected]]:
    """The valid records of a JSON-lines file, each with its horizon price."""
    data = read_bytes(Path(markets))
    decoded, rejected = decode_markets(data, markets)
    horizons, refused = _horizon_prices(data, markets, days, {r.line for r in rejected})
    rejected.extend(refused)
    bad_horizon = {r.line for r in refused}
    rows = [
        _Row(market=market, line=line, horizon_price=price)
        for market, (line, price) in zip(decoded, horizons, strict=True)
        if line not in bad_horizon
    ]
    return rows, rejected


def _gamma_rows(path: Path, days: int) -> tuple[list[_Row], list[Rejected]]:
    """The markets of a Gamma snapshot as the sources map them, each with its position in the
    array and its horizon price; refusals name the record's position and id."""
    raws = read_snapshot(path)
    source = str(path)
    markets, rejected = map_records(raws, source)
    field = horizon_field(days)
    decoder = msgspec.json.Decoder(
        msgspec.defstruct("GammaHorizon", [("id", Any, None), (field, Any, None)])
    )
    found: dict[str, tuple[int, object]] = {}
    for position, raw in enumerate(raws, start=1):
        try:
            record: Any = decoder.decode(raw)
        except msgspec.DecodeError:
            continue  # not an object: the mapping refused it already
        key = str(record.id).strip()
        if key not in found:
            found[key] = (position, getattr(record, field))
    rows: list[_Row] = []
    for market in markets:
        position, value = found[market.id]
        price: float | None = None
        if value is not None:
            try:
                price = price_points(value)
            except ValueError as exc:
                rejected.append(Rejected(
                    source=source, line=position, field=field,
                    message=_gamma_scale_hint(str(exc), value), record=market.id,
                ))
                continue
        rows.append(_Row(market=market, line=position, horizon_price=price))
    return rows, rejected


def _gamma_scale_hint(message: str, value: object) -> str:
    """The refusal of a Gamma horizon price; one that reads as points gets the 0-1 value."""
    if _is_points(value) and value > 1.0:
        return (f"{message}: a Gamma object's prices are 0-1, as in its outcomePrices "
                f"({value:g} points is {value / 100:g})")
    return message


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
                Rejected(source=source, line=number, field=field,
                         message=f"expected a number from 0 to 100, got {value!r}")
            )
        found.append((number, None if value is None else float(value)))
    return found, refused


def _is_points(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 100.0
    )

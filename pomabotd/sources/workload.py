"""The stress workload: a fixed, seeded mix of markets and signals as they stand at one moment.

`pomabotd stress` and the benchmarks measure cycles on this workload, not on the living world
of the `synthetic` source (`pomabotd.sources.world`): it stays what it was when their figures
were first recorded, so that figures of different versions compare.

The mix is built to exercise the whole gate rather than to look random: every category, prices
from 1 to 99, illiquid, closed and resolved markets, unclear authority, 0-6 signals of every type
(some conflicting, some speculative ones arriving first), and prices placed relative to the belief
the signals will produce, so that a realistic minority of markets (about one in ten) passes every
check and selection has real work to do.

Markets are made in blocks of `BLOCK` with numpy, each block from its own seed derived from
`(seed, block number)`, and written as JSON lines straight away: the same seed and `as_of` always
give the same bytes, whether the blocks are made one after another here or spread over a worker
pool (`generate_files`), and a million markets never exist as objects.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from pomabotd.domain.models import CATEGORIES, SIGNAL_TYPES, Market, Signal
from pomabotd.engine.kernels.columnar import belief_ranges
from pomabotd.engine.kernels.columns import SignalColumns
from pomabotd.sources.encode import (
    CATEGORY_TEXT,
    CRITERIA,
    QUESTIONS,
    TENTHS,
    cents,
    extras,
    micros,
    signal_middle,
    times,
)
from pomabotd.sources.offload import checkpoint
from pomabotd.wire import decode_markets, decode_signals

__all__ = [
    "BLOCK",
    "NAME",
    "SyntheticData",
    "generate",
    "generate_block",
    "generate_files",
    "generate_jsonl",
]

#: The source name its records are decoded under (in refusals, if there ever were any).
NAME = "workload"
#: Markets per seeded block.
BLOCK: Final = 1 << 15

#: Signals per market, drawn uniformly from this list (about 3.3 on average).
_SIGNAL_COUNTS: Final = np.array([0, 1, 2, 3, 3, 3, 4, 4, 5, 5, 6])
#: Relative frequency of each signal type, in `SIGNAL_TYPES` order.
_TYPE_WEIGHTS: Final = np.array([0.38, 0.22, 0.14, 0.13, 0.13])
_UNKNOWN_WEIGHTS: Final = np.array([0.7, 0.18, 0.08, 0.04])
_MINUTE_US: Final = 60_000_000
_HOUR_US: Final = 3_600_000_000
_DAY_US: Final = 86_400_000_000


class SyntheticData:
    """A generated workload: markets in id order and their signals grouped by market."""

    __slots__ = ("markets", "signals")

    def __init__(self, markets: list[Market], signals: list[Signal]) -> None:
        self.markets = markets
        self.signals = signals


def generate_block(block: int, count: int, seed: int, as_of: datetime) -> tuple[bytes, bytes]:
    """Block `block` of a `count`-market workload: its market lines and signal lines."""
    first = block * BLOCK
    size = min(BLOCK, count - first)
    if size <= 0:
        return b"", b""
    rng = np.random.default_rng([seed, block])
    now = micros(as_of)
    index = np.arange(first + 1, first + size + 1)
    per_market = rng.choice(_SIGNAL_COUNTS, size)
    owner = np.repeat(np.arange(size), per_market)
    signals = len(owner)
    trend = rng.integers(0, 3, size)
    direction = np.where(rng.random(signals) < 0.8, trend[owner], rng.integers(0, 3, signals))
    kind = rng.choice(len(SIGNAL_TYPES), signals, p=_TYPE_WEIGHTS)
    strength = rng.integers(1, 6, signals)
    conflicts = rng.random(signals) < 0.12
    stamp = now - rng.integers(5, 3 * 24 * 60 + 1, signals) * _MINUTE_US
    unknowns = rng.choice(4, size, p=_UNKNOWN_WEIGHTS)
    columns = SignalColumns(
        market=owner.astype(np.int64),
        timestamp=stamp.astype(np.int64),
        kind=kind.astype(np.int8),
        direction=direction.astype(np.int8),
        strength=strength.astype(np.float64),
        conflicts=conflicts,
    )
    low, high = belief_ranges(np.full(size, 50.0), columns, as_of)
    category = index % len(CATEGORIES)
    template = rng.integers(0, 2, size)
    closing_soon = rng.random(size) < 0.04
    closes_at = now + np.where(
        closing_soon,
        rng.integers(-72, 24 * 120 + 1, size) * _HOUR_US,
        rng.integers(1, 181, size) * _DAY_US,
    )
    illiquid = rng.random(size) < 0.15
    liquidity = np.where(
        illiquid, rng.uniform(50.0, 999.0, size), rng.lognormal(9.5, 1.2, size) + 1000.0
    )
    volume = rng.lognormal(7.0, 1.5, size)
    unclear = rng.random(size) >= 0.95
    subjective = rng.random(size) >= 0.95
    resolved = rng.random(size) < 0.02
    outcome = rng.integers(0, 2, size)
    roll = rng.random(size)
    inside = low + rng.random(size) * (high - low)
    below = low - rng.uniform(0.0, 45.0, size)
    above = high + rng.uniform(0.0, 45.0, size)
    price = np.clip(np.where(roll < 0.45, inside, np.where(roll < 0.72, below, above)), 1.0, 99.0)
    line_ends = extras(unclear, subjective, unknowns, resolved, outcome)
    question = QUESTIONS[(category * 2 + template) * 1000 + index % 1000]
    market_parts = np.empty((size, 12), object)
    market_parts[:, 0] = [f'{{"id":"syn-{n:07d}","question":"' for n in index.tolist()]
    market_parts[:, 1] = question
    market_parts[:, 2] = CATEGORY_TEXT[category]
    market_parts[:, 3] = TENTHS[np.rint(price * 10).astype(np.int64)]
    market_parts[:, 4:7] = cents(liquidity, ',"liquidity":')
    market_parts[:, 7:10] = cents(volume, ',"volume_24h":')
    market_parts[:, 10] = times(closes_at, ',"closes_at":"', '","resolution_criteria":"'
                                + CRITERIA + '"')
    market_parts[:, 11] = line_ends
    signal_parts = np.empty((signals, 3), object)
    signal_parts[:, 0] = np.array([f'{{"market_id":"syn-{n:07d}","type":"'
                                   for n in index.tolist()], object)[owner]
    signal_parts[:, 1] = signal_middle(kind, direction, strength, conflicts)
    signal_parts[:, 2] = times(stamp, "", '","source":"synthetic"}\n')
    return "".join(market_parts.ravel().tolist()).encode(), "".join(
        signal_parts.ravel().tolist()
    ).encode()


def _blocks(count: int) -> range:
    return range(-(-count // BLOCK))


def generate_jsonl(count: int, seed: int, as_of: datetime) -> tuple[bytes, bytes]:
    """The workload encoded as a real source delivers it: markets and signals JSON lines;
    run off the event loop, it stops before the next block once its cycle is cancelled."""
    parts = []
    for block in _blocks(count):
        checkpoint()
        parts.append(generate_block(block, count, seed, as_of))
    return b"".join(m for m, _ in parts), b"".join(s for _, s in parts)


def generate(count: int, seed: int, as_of: datetime) -> SyntheticData:
    """The same workload as records, for tests and small tools."""
    market_lines, signal_lines = generate_jsonl(count, seed, as_of)
    markets, _ = decode_markets(market_lines, NAME)
    signals, _ = decode_signals(signal_lines, NAME)
    return SyntheticData(markets, signals)


def _write_block(
    block: int, count: int, seed: int, as_of: datetime, directory: str
) -> tuple[str, str]:
    """Write one block to its own pair of files (in a worker); their paths."""
    market_lines, signal_lines = generate_block(block, count, seed, as_of)
    paths = (
        os.path.join(directory, f"markets.{block}"), os.path.join(directory, f"signals.{block}")
    )
    for path, data in zip(paths, (market_lines, signal_lines), strict=True):
        with open(path, "wb") as file:
            file.write(data)
    return paths


async def generate_files(
    count: int,
    seed: int,
    as_of: datetime,
    markets: Path,
    signals: Path,
    spread: Callable[[Callable[..., Any], Sequence[tuple[Any, ...]]], Awaitable[list[Any]]],
) -> None:
    """Write the workload to two JSON-lines files, its blocks made by `spread` (a runtime's
    `map`, which may run them in parallel), then joined in order by the kernel."""
    directory = str(markets.parent)
    calls = [(block, count, seed, as_of, directory) for block in _blocks(count)]
    parts: list[tuple[str, str]] = await spread(_write_block, calls)
    for target, which in ((markets, 0), (signals, 1)):
        with open(target, "wb") as out:
            for pair in parts:
                _append(out.fileno(), pair[which])


def _append(target: int, path: str) -> None:
    """Append a file to `target` without reading it here, then remove it."""
    with open(path, "rb") as part:
        size = os.fstat(part.fileno()).st_size
        while size > 0:
            copied = os.copy_file_range(part.fileno(), target, size)
            if copied <= 0:
                break
            size -= copied
    os.remove(path)

"""The columnar kernel against the scalar reference: bit-identical evaluations, reason included."""

from __future__ import annotations

import math
import random
import struct
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pomabotd.domain.belief import update_belief
from pomabotd.domain.evaluate import evaluate_market
from pomabotd.domain.gate import MAX_BELIEF_WIDTH, min_edge
from pomabotd.domain.models import CATEGORIES, SIGNAL_TYPES, Evaluation, Market, Signal
from pomabotd.engine.kernels.columnar import evaluate_batch, round_points
from pomabotd.engine.kernels.columns import micros
from pomabotd.errors import KernelInputError
from tests.strategies import AS_OF

#: A few instants around `AS_OF`, so that timestamps tie often; some are after `AS_OF`, and
#: some lie past 2038 or before 1970, where timestamps are converted the exact slow way.
_INSTANTS = [AS_OF + timedelta(hours=h) for h in (-24 * 40, -72, -30, -3, -1, -1, 0, 2)] + [
    datetime(2090, 1, 1, tzinfo=UTC),
    datetime(1950, 5, 17, 3, 4, 5, 6, tzinfo=UTC),
]
_times = st.sampled_from(_INSTANTS) | st.datetimes(
    min_value=datetime(2026, 5, 29), max_value=datetime(2026, 6, 1, 13), timezones=st.just(UTC)
)
#: Mostly authoritative and procedural news, which lifts confidence enough to reach every check.
_TYPES = ["authoritative"] * 5 + ["procedural"] * 2 + [*SIGNAL_TYPES]
_closes = st.sampled_from(
    [None] * 8
    + [AS_OF, AS_OF + timedelta(microseconds=1), AS_OF - timedelta(days=1)]
    + [AS_OF + timedelta(days=30), datetime(2090, 1, 1, tzinfo=UTC)]
)
_prices = (
    st.sampled_from([0.0, 100.0, 50.0, 45.0, 55.0, 0.1, 99.9, 3.0, 97.0])
    | st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
    | st.integers(0, 10**6).map(lambda n: n / 10**4)
)


@st.composite
def _signals(draw: st.DrawFn, market_id: str) -> list[Signal]:
    """0-7 signals: a speculative one first sometimes, every direction, conflicts, strong ones
    that clamp the range at 0 or 100."""
    count = draw(st.integers(0, 7))
    signals = [
        Signal(
            market_id=market_id,
            type=draw(st.sampled_from(_TYPES)),
            direction=draw(st.sampled_from(["up", "down", "neutral"])),
            strength=draw(st.integers(1, 5)),
            timestamp=draw(_times),
            conflicts_with_existing=draw(st.sampled_from([False, False, False, True])),
        )
        for _ in range(count)
    ]
    if signals and draw(st.booleans()):
        first = min(signal.timestamp for signal in signals) - timedelta(hours=1)
        signals.insert(0, msgspec.structs.replace(signals[0], type="speculative", timestamp=first))
    return signals


@st.composite
def _market(draw: st.DrawFn, index: int, prior: str) -> tuple[Market, list[Signal]]:
    """A market and its signals; its price is random, or placed so that its edge sits at the
    category minimum to within float noise."""
    market_id = f"m{index}"
    signals = draw(_signals(market_id))
    market = Market(
        id=market_id,
        question="q",
        category=draw(st.sampled_from([*CATEGORIES, "Sports ", "gardening"])),
        price=draw(_prices),
        liquidity=draw(st.sampled_from([5000.0] * 6 + [0.0, 999.99, 1000.0])),
        closes_at=draw(_closes),
        authority_is_clear=draw(st.sampled_from([True] * 9 + [False])),
        outcome_is_objective=draw(st.sampled_from([True] * 9 + [False])),
        unknowns=draw(st.sampled_from([0] * 6 + [1, 2, 10**20])),
        outcome=draw(st.sampled_from([None] * 12 + ["YES", "NO"])),
    )
    if draw(st.booleans()):
        belief = update_belief(market, signals, AS_OF, prior=prior).belief  # type: ignore[arg-type]
        nudge = draw(st.sampled_from([0.0, 1e-12, -1e-12, 1e-9, -1e-9, 5e-10, -5e-10]))
        minimum = min_edge(market.category)
        price = (
            belief.low - minimum + nudge if draw(st.booleans()) else belief.high + minimum + nudge
        )
        if 0.0 <= price <= 100.0:
            market = msgspec.structs.replace(market, price=price)
    return market, signals


@st.composite
def _batches(draw: st.DrawFn) -> tuple[str, list[Market], list[Signal]]:
    prior = draw(st.sampled_from(["fixed", "market"]))
    pairs = [draw(_market(index, prior)) for index in range(draw(st.integers(1, 12)))]
    signals = [signal for _, own in pairs for signal in own]
    # Input order across markets is shuffled: ties within a market keep their relative order.
    signals = draw(st.permutations(signals))
    stranger = Signal(
        market_id="elsewhere", type="authoritative", direction="up", strength=5, timestamp=AS_OF
    )
    return prior, [market for market, _ in pairs], [*signals, stranger]


def _reference(
    prior: str, markets: list[Market], signals: list[Signal]
) -> list[Evaluation]:
    return [evaluate_market(m, signals, AS_OF, prior=prior) for m in markets]  # type: ignore[arg-type]


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(_batches())
def test_kernel_is_bit_identical_to_the_scalar_evaluator(
    case: tuple[str, list[Market], list[Signal]],
) -> None:
    """Every field of every evaluation, floats to the bit and the reason word for word, is
    what `evaluate_market` gives: ties, speculative signals first, conflicts, clamping, limits
    met exactly, unknowns, signals after `as_of`, decay, both priors."""
    prior, markets, signals = case
    got = evaluate_batch(markets, signals, AS_OF, prior=prior)  # type: ignore[arg-type]
    want = _reference(prior, markets, signals)
    assert [msgspec.json.encode(e) for e in got] == [msgspec.json.encode(e) for e in want]
    assert [_bits(e) for e in got] == [_bits(e) for e in want]


def _bits(evaluation: Evaluation) -> tuple[object, ...]:
    """The floats as their bit patterns, so that -0.0 and 0.0 differ."""
    return tuple(
        struct.pack("<d", value) if isinstance(value, float) else value
        for value in msgspec.structs.astuple(evaluation)
    )


def test_limits_met_exactly_pass_in_both_paths() -> None:
    """A width of exactly 25 and an edge at the category minimum through float noise pass."""
    market = Market(id="m", question="q", category="weather", price=0.2, liquidity=5000.0)
    signals = [
        Signal(market_id="m", type="authoritative", direction="down", strength=5,
               timestamp=AS_OF - timedelta(hours=2), conflicts_with_existing=True),
    ]
    got = evaluate_batch([market], signals, AS_OF, prior="market")
    assert got == [evaluate_market(market, signals, AS_OF, prior="market")]
    assert MAX_BELIEF_WIDTH == 25.0


_NEAR_HALVES = st.integers(-(10**11), 10**11).map(lambda n: (n + 0.5) / 1e9)


@settings(max_examples=500)
@given(
    st.floats(min_value=-2000.0, max_value=2000.0, allow_nan=False)
    | _NEAR_HALVES
    | st.integers(-(10**13), 10**13).map(lambda n: n / 1e11)
)
@example(7.999999999999999)
@example(25.000000000000004)
@example(0.0000000005)
@example(-0.0000000005)
@example(2.6749999999999998)
@example(1e300)
def test_round_points_is_pythons_round(value: float) -> None:
    """`round_points` gives `round(x, 9)` to the bit, half-way cases and large values too."""
    import numpy as np

    got = round_points(np.array([value, -value]))
    assert [struct.pack("<d", x) for x in got.tolist()] == [
        struct.pack("<d", round(value, 9)),
        struct.pack("<d", round(-value, 9)),
    ]


@given(st.datetimes(timezones=st.just(UTC)) | st.datetimes(
    timezones=st.sampled_from([UTC, __import__("datetime").timezone(timedelta(hours=-7))])
))
def test_micros_are_exact(value: datetime) -> None:
    """Microseconds since the epoch are exact, for any aware datetime in datetime's range."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert micros([value, None]).tolist() == [
        (value - epoch) // timedelta(microseconds=1),
        2**63 - 1,
    ]


def test_signals_centuries_apart_are_left_to_the_scalar_path() -> None:
    """Time differences too large to convert exactly raise `KernelInputError`."""
    market = Market(id="m", question="q", price=50.0, liquidity=5000.0)
    old = Signal(market_id="m", type="authoritative", direction="up", strength=5,
                 timestamp=datetime(1600, 1, 1, tzinfo=UTC))
    with pytest.raises(KernelInputError):
        evaluate_batch([market], [old], AS_OF)
    assert math.isfinite(evaluate_market(market, [old], AS_OF).confidence)


def test_repeated_market_ids_are_refused() -> None:
    """The kernel matches signals to markets by id, so a batch's ids must be distinct."""
    market = Market(id="m", question="q", price=50.0, liquidity=5000.0)
    with pytest.raises(KernelInputError, match="repeat"):
        evaluate_batch([market, market], [], AS_OF)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_is_bit_identical_on_a_batch_sorted_by_two_keys(seed: int) -> None:
    """1,200 random markets whose signals span 1950 to 2090 (too wide a span to share one sort
    key with the market, so signals are ordered by a two-key sort), as of a time with a UTC
    offset and microseconds, both priors: still bit-identical to the scalar evaluator."""
    rng = random.Random(seed)
    prior = ("fixed", "market")[seed % 2]
    markets: list[Market] = []
    signals: list[Signal] = []
    for index in range(1_200):
        market = Market(
            id=f"m{index}", question="q", category=rng.choice([*CATEGORIES, "gardening"]),
            price=rng.choice([0.0, 100.0, 45.0, rng.uniform(0.0, 100.0)]),
            liquidity=rng.choice([5000.0, 5000.0, 999.99, 1000.0]),
            closes_at=rng.choice([None, None, AS_OF, AS_OF + timedelta(days=30)]),
            authority_is_clear=rng.random() < 0.9, outcome_is_objective=rng.random() < 0.9,
            unknowns=rng.choice([0, 0, 0, 1, 2]),
        )
        markets.append(market)
        signals += [
            Signal(market_id=market.id, type=rng.choice(_TYPES),
                   direction=rng.choice(["up", "down", "neutral"]), strength=rng.randint(1, 5),
                   timestamp=rng.choice(_INSTANTS),
                   conflicts_with_existing=rng.random() < 0.25)
            for _ in range(rng.randint(0, 6))
        ]
    edges = [datetime(1950, 5, 17, 3, 4, 5, 6, tzinfo=UTC), datetime(2090, 1, 1, tzinfo=UTC)]
    signals += [Signal(market_id=markets[index].id, type="procedural", direction="up",
                       strength=3, timestamp=edges[index]) for index in (0, 1)]
    rng.shuffle(signals)
    as_of = AS_OF.astimezone(timezone(timedelta(hours=5, minutes=30))) + timedelta(
        microseconds=rng.randint(0, 999_999))
    got = evaluate_batch(markets, signals, as_of, prior=prior)  # type: ignore[arg-type]
    want = [evaluate_market(m, signals, as_of, prior=prior)  # type: ignore[arg-type]
            for m in markets]
    assert sum(e.failed_check is None for e in want) > 0
    assert [_bits(e) for e in got] == [_bits(e) for e in want]

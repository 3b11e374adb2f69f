"""The native decoder against msgspec: never looser, and the very same columns.

msgspec, typed by the `Market` and `Signal` annotations, is the reference: what the native
decoder accepts, the line-by-line readers must accept too (every line, no refusal), and the
columns it gives must equal, bit for bit, those built from msgspec's records. Lines come from
real inputs (Polymarket's Gamma sample, the test files, the synthetic generator), mutated by
Hypothesis (`tests/line_strategies.py`). What it declines goes to msgspec, so through the
engine both decoders give the same evaluations and the same refusals, worded alike.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pomabotd.domain.models import Evaluation, Market, Signal
from pomabotd.engine.kernels import native
from pomabotd.engine.kernels.columns import (
    MarketColumns,
    SignalColumns,
    market_columns,
    market_rows,
    signal_columns,
)
from pomabotd.engine.pieces import decode_bulk, id_hashes, line_count
from pomabotd.engine.runtime import BatchSettings, RunResult, Runtime
from pomabotd.errors import ConfigError
from pomabotd.wire import decode_markets, decode_signals
from tests.line_strategies import MARKET_LINES, SIGNAL_LINES, blocks, market_lines, signal_lines

#: Without a Rust toolchain there is no native decoder to test; with one, it must be built.
#: The module's runtimes are shared: its tests run on one xdist worker.
pytestmark = [
    pytest.mark.skipif(not native.available() and shutil.which("cargo") is None,
                       reason="no Rust toolchain here, so no native decoder: workers decode "
                              "with msgspec"),
    pytest.mark.xdist_group("native_runtimes"),
]

AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)
_MARKET = msgspec.json.Decoder(Market)
_SIGNAL = msgspec.json.Decoder(Signal)
_FUZZ = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def _accepts(decoder: msgspec.json.Decoder[Any], line: bytes) -> bool:
    try:
        decoder.decode(line)
    except msgspec.DecodeError:
        return False
    return True


#: Markets the fuzzed signals are matched against: every id the real signal lines name.
_KNOWN = b"".join(
    msgspec.json.encode(Market(id=market_id, question="q", price=50.0, liquidity=1.0)) + b"\n"
    for market_id in dict.fromkeys(
        _SIGNAL.decode(line).market_id for line in SIGNAL_LINES if _accepts(_SIGNAL, line))
)


def _same(got: Any, expected: Any, names: tuple[str, ...]) -> None:
    for name in names:
        ours, theirs = getattr(got, name), getattr(expected, name)
        assert ours.dtype == theirs.dtype, name
        assert ours.tobytes() == theirs.tobytes(), name


_MARKET_ARRAYS = tuple(n for n in MarketColumns.__struct_fields__ if n != "records")
_SIGNAL_ARRAYS = SignalColumns.__struct_fields__


def _check_markets(data: bytes) -> native.NativeMarkets | None:
    """The native decoder's markets of `data`, checked against msgspec's path."""
    got = native.decode_markets(data)
    if got is None:
        return None
    records, rejected = decode_markets(data, "m")
    assert rejected == [], "accepted lines msgspec refuses"
    assert len(records) == line_count(data) == got.count, "a blank or shared line accepted"
    assert decode_bulk(data, _MARKET) == records
    _same(got.columns, market_columns(records), _MARKET_ARRAYS)
    assert list(got.columns.records) == records
    assert got.ids() == [market.id.encode() for market in records]
    assert got.hashes.tobytes() == id_hashes(got.ids())
    return got


def _check_signals(data: bytes, markets: native.NativeMarkets) -> None:
    got = native.decode_signals(data, markets)
    if got is None:
        return
    records, rejected = decode_signals(data, "s")
    assert rejected == [], "accepted lines msgspec refuses"
    assert len(records) == line_count(data) == got.count, "a blank or shared line accepted"
    assert decode_bulk(data, _SIGNAL) == records
    index = {market.id: row for row, market in enumerate(markets.columns.records)}
    rows = market_rows(records, index)
    _same(got.columns, signal_columns(records, rows), _SIGNAL_ARRAYS)
    assert got.strangers == rows.count(-1)


def test_the_library_reads_the_schema_the_models_declare() -> None:
    """The built decoder carries the schema text derived from `Market` and `Signal`: fields,
    types, bounds, defaults, the post-init normalisation and the kernel's codes."""
    assert native.library_schema() == native.schema_text()
    assert native.problem() is None


def test_a_model_changed_without_the_decoder_is_found() -> None:
    """A field added, a bound, default or literal changed, or a changed `__post_init__`, gives
    another schema text than the library's, and the decoder is not used."""

    class Wider(Market, frozen=True, kw_only=True):
        tags: str | None = None

    class Renormalised(Market, frozen=True, kw_only=True):
        def __post_init__(self) -> None:
            msgspec.structs.force_setattr(self, "category", self.category.casefold())

    class Stronger(Signal, frozen=True, kw_only=True):
        strength: Annotated[int, msgspec.Meta(ge=1, le=10)]

    built = native.library_schema()
    assert native.schema_text(Market, Signal) == built
    for market, signal in ((Wider, Signal), (Renormalised, Signal), (Market, Stronger)):
        assert native.schema_text(market, signal) != built


def test_a_library_of_another_schema_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the library's schema differs from the models', pomabotd says why and decodes with
    msgspec; `batch.decoder = "native"` is then refused, saying how to rebuild."""
    monkeypatch.setattr(native, "schema_text", lambda *models: "Market{another}")
    native._load.cache_clear()
    try:
        assert not native.available()
        assert "other models" in str(native.problem())
        assert native.decoder_in_use("auto") == "msgspec"
        with pytest.raises(ConfigError, match=r"batch\.decoder is 'native' but"):
            native.decoder_in_use("native")
    finally:
        native._load.cache_clear()


@_FUZZ
@given(blocks(market_lines()))
def test_market_blocks_it_accepts_msgspec_accepts_with_the_same_columns(data: bytes) -> None:
    """Every block of market lines the native decoder accepts, msgspec accepts line by line
    and in one call, and its columns, ids, hashes and records equal msgspec's path's."""
    _check_markets(data)


@_FUZZ
@given(market_lines())
def test_each_market_line_it_accepts_msgspec_accepts(line: bytes) -> None:
    """Line by line: never looser than msgspec, and the same values."""
    _check_markets(line)


@_FUZZ
@given(blocks(signal_lines()))
def test_signal_blocks_it_accepts_msgspec_accepts_with_the_same_columns(data: bytes) -> None:
    """Every block of signal lines the native decoder accepts, msgspec accepts, and its columns
    (market rows included) equal msgspec's path's."""
    markets = native.decode_markets(_KNOWN)
    assert markets is not None
    _check_signals(data, markets)


def _valid(lines: list[bytes], decoder: msgspec.json.Decoder[Any], key: str) -> list[bytes]:
    """The lines msgspec accepts, each key once (the test files hold some bad ones)."""
    kept: dict[str, bytes] = {}
    for line in lines:
        try:
            kept.setdefault(getattr(decoder.decode(line), key), line)
        except msgspec.DecodeError:
            continue
    return list(kept.values()) if key == "id" else [
        line for line in lines if _accepts(decoder, line)]


def test_real_lines_are_all_taken_natively() -> None:
    """The real lines msgspec accepts (Gamma's sample mapped as the live source maps it, the
    test files, synthetic) are all read by the native decoder, with msgspec's columns."""
    market_lines = _valid(MARKET_LINES, _MARKET, "id")
    assert len(market_lines) > 100
    assert _check_markets(b"\n".join(market_lines)) is not None
    markets = _check_markets(_KNOWN)
    assert markets is not None
    signal_lines = b"\n".join(_valid(SIGNAL_LINES, _SIGNAL, "market_id"))
    assert native.decode_signals(signal_lines, markets) is not None
    _check_signals(signal_lines, markets)


@pytest.mark.parametrize("line", [
    b'{"id":"m","question":"q","price":-0,"liquidity":0}',
    b'{"id":"m","question":"q","price":1e1,"liquidity":12345.678901234567}',
    b'{"id":"m","question":"q","price":50,"liquidity":1,"category":" CRYPTO\\t"}',
    b'{"id":"m","question":"q","price":50,"liquidity":1,"closes_at":"9999-12-31T23:59:59-01:00"}',
    b'{"id":"m","question":"q","price":50,"liquidity":1,"closes_at":"2026-01-01T00:00:00.9999995Z"}',
    b'{"id":"m","question":"\\ud83d\\ude00","price":50,"liquidity":1,"price":60}',
    b'{"id":"m\\u0000","question":"q","price":50,"liquidity":1,"x":"\xff"}',
    b' {"id":"m" , "question":"q" , "price":50 , "liquidity":1 }\r',
])
def test_odd_but_valid_lines_are_taken_with_msgspec_values(line: bytes) -> None:
    """Spellings msgspec accepts and the decoder reads exactly: a negative zero integer, an
    exponent, a category to normalise, a time past 9999 in UTC, a fraction rounded up into
    the next year, a surrogate pair and a repeated field (the last counts), a NUL in an id
    beside invalid UTF-8 in a skipped field, whitespace and a carriage return."""
    assert _check_markets(line) is not None


@pytest.mark.parametrize("line", [
    b'{"id":"m","question":"q","price":50,"liquidity":1}{"id":"n","question":"q","price":5,'
    b'"liquidity":1}',
    b'{"id":"m","question":"q","price":50,"liquidity":1,"price":101}',
    b'{"id":"m","question":"\xff","price":50,"liquidity":1}',
    b'{"id":"m","question":"q","price":50,"liquidity":1,"closes_at":"2026-01-01T00:00:00"}',
    b'{"id":"m","question":"q","price":50,"liquidity":1,"unknowns":1.0}',
    b'{"id":"","question":"q","price":50,"liquidity":1}',
    b'{"id":"m","question":"q","price":1e400,"liquidity":1}',
    b'{"id":"m","question":"q","price":50,"liquidity":1,}',
    b'{"id":"m","question":"\\ud83d","price":50,"liquidity":1}',
])
def test_lines_msgspec_refuses_are_declined(line: bytes) -> None:
    """Two records on a line, an out-of-range repeat, invalid UTF-8 in a string, a naive
    time, a float for an integer, an empty id, an infinite number, a trailing comma and a
    lone surrogate: the decoder declines each (msgspec then refuses it by line)."""
    assert native.decode_markets(line) is None
    with pytest.raises(msgspec.DecodeError):
        _MARKET.decode(line)


def _digest(result: RunResult) -> tuple[object, ...]:
    return (
        [msgspec.structs.replace(e, elapsed_us=0.0) for e in result.candidates],
        result.markets,
        sorted(result.kept),
        result.markets_evaluated,
        result.markets_failed,
        result.signals_total,
        [(r.source, r.line, r.field, r.message, r.record) for r in result.rejected],
    )


@pytest.fixture(scope="module")
def runtimes() -> Iterator[dict[tuple[int, str], Runtime]]:
    """A runtime per worker count and decoder, shared by the module, closed at its end."""
    started = {}
    try:
        for workers in (0, 2):
            for decoder in ("msgspec", "native"):
                runtime = Runtime(BatchSettings(
                    workers=workers, batch_size=7, max_concurrency=50, timeout_ms=5000,
                    retry_attempts=1, inline_below=0, decoder=decoder))
                runtime.start()
                started[workers, decoder] = runtime
        yield started
    finally:
        for runtime in started.values():
            runtime.close()


def _ids(lines: list[bytes]) -> list[str]:
    found = []
    for line in lines:
        try:
            found.append(_MARKET.decode(line).id)
        except msgspec.DecodeError:
            continue
    return list(dict.fromkeys(found))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(markets=st.lists(market_lines(), min_size=20, max_size=60),
       signals=st.lists(signal_lines(), min_size=20, max_size=80),
       workers=st.sampled_from([0, 2]))
def test_through_the_engine_both_decoders_give_the_same_results_and_refusals(
    runtimes: dict[tuple[int, str], Runtime], markets: list[bytes], signals: list[bytes],
    workers: int,
) -> None:
    """Mutated markets and signals through a whole run: the native decoder's run gives the
    evaluations, kept markets, counts and refusals (file, line, field and message) of the
    msgspec decoder's run, in process and on a pool."""
    market_data = b"\n".join(markets) + b"\n"
    signal_data = b"\n".join(signals) + b"\n"
    keep = tuple(_ids(markets)[:3])
    msgspec_run, native_run = (
        _digest(runtimes[workers, decoder].evaluate_sync(
            market_data, "m", signal_data, "s", AS_OF, keep=keep))
        for decoder in ("msgspec", "native")
    )
    assert native_run == msgspec_run


def _evaluation_lines(runtime: Runtime, markets: bytes, signals: bytes) -> list[Any]:
    """Every evaluation of a run as `evaluate` writes them, their timings zeroed."""
    written: list[bytes] = []
    runtime.evaluate_sync(markets, "m", signals, "s", AS_OF, on_lines=written.append)
    return [msgspec.structs.replace(e, elapsed_us=0.0)
            for e in msgspec.json.Decoder(Evaluation).decode_lines(b"".join(written))]


#: Markets failing every check, `market_open` by an offset close and by an outcome included.
_EVERY_FAILURE = b"".join(line + b"\n" for line in [
    b'{"id":"closed","question":"q","price":50,"liquidity":5000,'
    b'"closes_at":"2026-06-01T13:00:00+02:00"}',
    b'{"id":"resolved","question":"q","price":50,"liquidity":5000,"outcome":"NO"}',
    b'{"id":"unclear","question":"q","price":5,"liquidity":5000,"authority_is_clear":false}',
    b'{"id":"subjective","question":"q","price":5,"liquidity":5000,'
    b'"outcome_is_objective":false}',
    b'{"id":"thin","question":"q","price":5,"liquidity":999.5}',
    b'{"id":"wide","question":"q","price":5,"liquidity":5000,"unknowns":9}',
    b'{"id":"inside","question":"q","price":50,"liquidity":5000,"category":" Sports "}',
    b'{"id":"zero","question":"q","price":0,"liquidity":5000,"category":"weather"}',
])


def test_evaluate_describes_every_market_as_msgspec_does_without_decoding_them_again(
    runtimes: dict[tuple[int, str], Runtime],
) -> None:
    """`evaluate` with the native decoder writes the evaluations, reasons included, that the
    msgspec decoder's run writes, for markets failing every check and a stress workload; the
    decoder's block decodes again (with msgspec) only the markets a closed or resolved one's
    sentence or a candidate needs, not every market."""
    from pomabotd.engine.kernels.columnar import PASSED, evaluate_columns, evaluations
    from pomabotd.sources.workload import generate_jsonl

    workload, workload_signals = generate_jsonl(2000, 11, AS_OF)
    markets = _EVERY_FAILURE + workload
    for workers in (0, 2):
        got = _evaluation_lines(runtimes[workers, "native"], markets, workload_signals)
        assert got == _evaluation_lines(runtimes[workers, "msgspec"], markets, workload_signals)
        assert {e.failed_check for e in got} >= {
            None, "market_open", "resolution_authority", "objective_outcome", "liquidity",
            "belief_width", "confidence", "price_outside_range", "edge"}
    block = native.decode_markets(markets)
    assert block is not None
    signals = native.decode_signals(workload_signals, block)
    assert signals is not None
    verdicts = evaluate_columns(block.columns, signals.columns, AS_OF, "fixed")
    built = evaluations(block.columns, verdicts, AS_OF)
    assert len(built) == block.count
    records = block.columns.records
    assert isinstance(records, native.LazyMarkets)
    closed = sum(e.failed_check == "market_open" for e in built)
    assert 0 < records.decoded == closed < block.count / 10
    assert int((verdicts.failed == PASSED).sum()) > 0

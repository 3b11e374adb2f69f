"""Reading markets and signals from JSON-lines files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from pomabotd.domain.models import Market, Signal
from pomabotd.errors import InputError
from pomabotd.sources.jsonl import read_markets, read_signals
from pomabotd.wire import Rejected, decode_markets, decode_signals, group_signals

DATA = Path(__file__).parent / "data"


def _by_line(rejected: list[Rejected]) -> dict[int, Rejected]:
    return {r.line: r for r in rejected}


def test_good_markets_file_loads_every_record() -> None:
    """A valid file loads in order, skipping blank lines, with unknown categories as `other`."""
    markets, rejected = read_markets(DATA / "markets_good.jsonl")
    assert rejected == []
    assert [m.id for m in markets] == ["m1", "m2", "m3", "m4"]
    assert [m.category for m in markets] == ["politics", "crypto", "weather", "other"]
    first = markets[0]
    assert first.price == 42.5
    assert first.closes_at == datetime(2030, 11, 5, tzinfo=UTC)
    assert first.unknowns == 1
    assert markets[1].volume_24h == 0.0 and markets[1].authority_is_clear is True
    assert markets[3].outcome == "NO"


def test_bad_markets_are_rejected_with_line_and_field() -> None:
    """Each kind of bad market names its line and field while the good ones still load."""
    markets, rejected = read_markets(DATA / "markets_bad.jsonl")
    assert [m.id for m in markets] == ["ok1", "ok2"]
    assert markets[1].category == "other"
    by_line = _by_line(rejected)
    expected = {
        2: None,  # not JSON
        3: "id",  # missing id
        4: "price",  # 1e999, i.e. infinite
        5: None,  # a bare NaN is not JSON
        6: "price",  # 101
        7: "price",  # "5"
        8: "closes_at",  # naive datetime
        10: "id",  # duplicate id
        11: "id",  # empty id
        12: "liquidity",  # negative
        13: "$",  # not an object
        14: "unknowns",  # negative
    }
    assert {line: r.field for line, r in by_line.items()} == expected
    assert [r.line for r in rejected] == sorted(expected)
    assert "missing required field" in by_line[3].message
    assert "100" in by_line[6].message
    assert "str" in by_line[7].message
    assert "timezone" in by_line[8].message
    assert "duplicate id 'ok1' (first on line 1)" in by_line[10].message
    assert "malformed" in by_line[2].message


def test_rejected_reads_as_a_sentence() -> None:
    """`str(Rejected)` says file, line, field and reason, with no msgspec backticks."""
    _, rejected = decode_markets(
        b'{"id":"a","question":"q","price":101,"liquidity":1}\n', "markets.jsonl"
    )
    assert [str(r) for r in rejected] == ["markets.jsonl line 1: price: Expected float <= 100.0"]
    _, rejected = decode_markets(b"\n\n{oops\n", "markets.jsonl")
    assert str(rejected[0]).startswith("markets.jsonl line 3: JSON is malformed")


def test_rejected_is_plain_data() -> None:
    """A rejection survives a msgspec round trip, so it can cross a process boundary."""
    rejected = Rejected(source="m.jsonl", line=4, field="price", message="Expected float <= 100.0")
    encoded = msgspec.msgpack.encode(rejected)
    assert msgspec.msgpack.decode(encoded, type=Rejected) == rejected


def test_first_line_numbers_a_chunk() -> None:
    """A chunk cut from a larger file reports the line numbers of that file."""
    data = b'{"id":"a","question":"q","price":5,"liquidity":1}\n{"id":"b"}\n'
    markets, rejected = decode_markets(data, "big.jsonl", first_line=101)
    assert [m.id for m in markets] == ["a"]
    assert [(r.line, r.field) for r in rejected] == [(102, "question")]


def test_crlf_and_bom_are_accepted() -> None:
    """Windows line endings and a UTF-8 byte-order mark do not reject good records."""
    data = (
        b'\xef\xbb\xbf{"id":"a","question":"q","price":5,"liquidity":1}\r\n'
        b'{"id":"b","question":"q","price":6,"liquidity":1}\r\n\r\n'
    )
    markets, rejected = decode_markets(data, "win.jsonl")
    assert rejected == []
    assert [m.id for m in markets] == ["a", "b"]


def test_nested_path_is_reported() -> None:
    """A bad value inside a nested record is named by its JSON path, without the `$.` prefix."""
    _, rejected = decode_signals(b'{"market_id":"m","type":"speculative"}', "s.jsonl")
    assert [(r.line, r.field) for r in rejected] == [(1, "direction")]


def test_good_signals_file_loads_every_record() -> None:
    """A valid signals file loads in order with defaults and aware timestamps."""
    signals, rejected = read_signals(DATA / "signals_good.jsonl")
    assert rejected == []
    assert [(s.market_id, s.type) for s in signals] == [
        ("m1", "authoritative"),
        ("m2", "speculative"),
        ("m1", "procedural"),
        ("m1", "interpretive"),
    ]
    assert signals[0].conflicts_with_existing is False
    assert signals[2].conflicts_with_existing is True
    assert signals[3].timestamp.utcoffset() == timedelta(hours=2)


def test_bad_signals_are_rejected_with_line_and_field() -> None:
    """Strength 0 and 6, an unknown type or direction, a naive timestamp are each rejected."""
    signals, rejected = read_signals(DATA / "signals_bad.jsonl")
    assert [(s.market_id, s.strength) for s in signals] == [("m1", 3), ("m2", 2)]
    by_line = _by_line(rejected)
    assert {line: r.field for line, r in by_line.items()} == {
        2: "strength",
        3: "strength",
        4: "type",
        5: "timestamp",
        6: "direction",
        7: "strength",
        9: "market_id",
    }
    assert ">= 1" in by_line[2].message
    assert "<= 5" in by_line[3].message
    assert "rumour" in by_line[4].message


def test_signals_may_repeat_a_market() -> None:
    """Unlike market ids, several signals naming one market are all kept."""
    line = b'{"market_id":"m","type":"procedural","direction":"up","strength":2,'
    line += b'"timestamp":"2030-01-01T00:00:00Z"}\n'
    signals, rejected = decode_signals(line * 3, "s.jsonl")
    assert len(signals) == 3
    assert rejected == []


@pytest.mark.parametrize("reader", [read_markets, read_signals])
def test_missing_file_is_an_input_error(tmp_path: Path, reader: object) -> None:
    """A missing file raises InputError naming the path, not a traceback from the OS."""
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file"):
        reader(path)  # type: ignore[operator]


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    """Pointing at a directory raises InputError naming it."""
    with pytest.raises(InputError, match="is a directory"):
        read_markets(tmp_path)


def test_empty_file_loads_nothing(tmp_path: Path) -> None:
    """An empty file is valid: no markets, no rejections."""
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert read_markets(path) == ([], [])


def test_group_signals_keeps_input_order() -> None:
    """Signals are grouped by market in input order, which later breaks timestamp ties."""
    t = datetime(2030, 1, 1, tzinfo=UTC)

    def sig(market_id: str, strength: int) -> Signal:
        return Signal(
            market_id=market_id, type="quantitative", direction="up", strength=strength, timestamp=t
        )

    signals = [sig("b", 1), sig("a", 2), sig("b", 3), sig("a", 4), sig("c", 5)]
    grouped = group_signals(signals)
    assert list(grouped) == ["b", "a", "c"]
    assert [s.strength for s in grouped["b"]] == [1, 3]
    assert [s.strength for s in grouped["a"]] == [2, 4]
    assert group_signals([]) == {}


def test_round_trip_of_encoded_markets() -> None:
    """Markets encoded by msgspec decode back to equal values, one per line."""
    markets = [
        Market(id=f"m{i}", question="q", category="sports", price=i * 0.5, liquidity=1000.0 + i)
        for i in range(200)
    ]
    data = b"\n".join(msgspec.json.encode(m) for m in markets) + b"\n"
    decoded, rejected = decode_markets(data, "gen.jsonl")
    assert rejected == []
    assert decoded == markets

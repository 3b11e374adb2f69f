"""Hypothesis strategies for JSON lines of markets and signals as they arrive: real lines,
mutated the ways input goes wrong or gets unusual (odd numbers and time spellings, escapes,
invalid UTF-8, duplicate and unknown fields, nulls, whitespace, cut or merged lines).

They feed the differential tests of the native decoder against msgspec, which must agree on
every line: what one accepts the other accepts, with the same values.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import strategies as st

from pomabotd.sources.gamma import encode_markets, map_records, read_snapshot
from pomabotd.sources.workload import generate_jsonl

__all__ = ["MARKET_LINES", "SIGNAL_LINES", "as_lines", "blocks", "market_lines", "signal_lines"]

_DATA = Path(__file__).parent / "data"
_AS_OF = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _real_market_lines() -> list[bytes]:
    """Real Polymarket markets (the Gamma sample, mapped as the live source maps them), the
    hand-written test files and synthetic lines."""
    markets, _ = map_records(read_snapshot(_DATA / "gamma" / "markets_sample_50.json"), "gamma")
    lines = encode_markets(markets).splitlines()
    for name in ("markets_good.jsonl", "cycle_markets.jsonl", "replay_markets.jsonl",
                 "news_markets.jsonl"):
        lines += [line for line in (_DATA / name).read_bytes().splitlines() if line.strip()]
    synthetic, _ = generate_jsonl(40, 3, _AS_OF)
    return lines + synthetic.splitlines()


def _real_signal_lines() -> list[bytes]:
    lines: list[bytes] = []
    for name in ("signals_good.jsonl", "cycle_signals.jsonl", "replay_signals.jsonl",
                 "news_signals.jsonl", "gamma/resolved_sample_25_signals.jsonl"):
        lines += [line for line in (_DATA / name).read_bytes().splitlines() if line.strip()]
    _, synthetic = generate_jsonl(40, 3, _AS_OF)
    return lines + synthetic.splitlines()


MARKET_LINES = _real_market_lines()
SIGNAL_LINES = _real_signal_lines()

_FLOATS = [
    "0", "-0", "0.0", "-0.0", "50", "50.5", "1e2", "1E2", "1e+2", "1.0e1", "100", "100.0",
    "100.00000000000001", "100.0000000000000000001", "99.99999999999999", "99.999999999999999",
    "1e-320", "4.9e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "1e400",
    "-1e400", "1e-400", "123456789012345678901234", "0.1", "0.30000000000000004",
    "12345.678901234567", "9007199254740993", "18446744073709551615", "18446744073709551616",
    "9223372036854775808", "1234567890123456789", "12345678901234567890", "-1", "101", "01",
    "1.", ".5", "+1", "NaN", "Infinity", "-", "1e", "0x10", '"50"', "true", "null", "[]",
    "{}", "5e-1", "0.000000000000000000000000000001", "1000000000000000000000e-20",
]
_INTS = [
    "0", "-0", "1", "2", "5", "6", "3.0", "1e0", "-1", "9223372036854775807",
    "9223372036854775808", "18446744073709551616", "99999999999999999999", "007", "1.5",
    '"3"', "true", "null", "123456789012345678", "1234567890123456789",
]
_TIMES = [
    "2026-06-01T10:00:00Z", "2026-06-01t10:00:00z", "2026-06-01 10:00:00+00:00",
    "2026-06-01T10:00:00+05:30", "2026-06-01T10:00:00+0530", "2026-06-01T10:00:00-01:00",
    "2026-06-01T10:00:00.5Z", "2026-06-01T10:00:00.123456Z", "2026-06-01T10:00:00.1234565Z",
    "2026-06-01T10:00:00.1234564999Z", "2026-06-01T23:59:59.9999995Z",
    "2026-12-31T23:59:59.99999999+14:00", "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.9999995Z", "0001-01-01T00:00:00+01:00", "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z", "2026-06-01T10:00:00", "2026-06-01T24:00:00Z",
    "2026-06-01T10:60:00Z", "2026-06-01T10:00:60Z", "2026-06-01T10:00:00+24:00",
    "2026-06-01T10:00:00+05", "2026-06-01T10:00:00+5:30", "2026-06-01T10:00:00.Z",
    "2026-06-01T10:00Z", "2026-6-01T10:00:00Z", "0000-01-01T00:00:00Z", "2026-06-01",
    "2026-06-01X10:00:00Z", "2026-06-01T10:00:00ZZ", "2026-06-01T10:00:00 Z",
    "\\u0032026-06-01T10:00:00Z", "2026-06-01T10:00:00\\u005a", " 2026-06-01T10:00:00Z",
]
_STRINGS = [
    '"plain"', '""', '"\\u00e9t\\u00e9"', '"\\ud83d\\ude00"', '"\\ud83d"', '"\\ude00"',
    '"\\ud83d\\u0041"', '"\\ud83dx"', '"\\x"', '"a\\/b"', '"tab\\there"', '"\\u0000"',
    '"a\\nb"', '"\\"quoted\\""', '"back\\\\slash"', '"\\u12"', '"\\uZZZZ"',
]
_RAW_STRINGS = [
    b'"caf\xc3\xa9"', b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"ctl\x01"', b'"unterminated',
    b'"\xe2\x82"', b'"\xf0\x9f\x98\x80"', b'"\xf4\x90\x80\x80"', b'"del\x7f"', b'"nul\x00"',
]
_CATEGORIES = [
    '"Politics"', '" CRYPTO "', '"\\u00a0world"', '"sp\\u006frts"', '"\\tweather\\n"',
    '"\\u000bother\\u001f"', '"\\u001cEconomics\\u001d"', '"\\uff30olitics"', '"\\u212arypto"',
    '"\\u0130"', '"technology "', '"tech"', '"US-current-affairs"', '""', '"world\\u0000"',
]
_CATEGORY_BYTES = [b'"\xc2\xa0world"', b'"\xe2\x80\x83sports"', b'"POLITICS\xe3\x80\x80"']
_LITERALS = ['"YES"', '"NO"', '"yes"', '"\\u0059ES"', '"MAYBE"', "null", "1", '"NO "']
_SIGNAL_WORDS = [
    '"authoritative"', '"procedural"', '"quantitative"', '"interpretive"', '"speculative"',
    '"up"', '"down"', '"neutral"', '"Up"', '"sideways"', '"\\u0075p"', '"rumour"', "null",
]
_BOOLS = ["true", "false", "1", "0", '"true"', "null", "True", "tru", "falsey"]
_UNKNOWN = [
    '{"a":[1,2,{"b":null}]}', "[1,]", "[]", "{}", '"\\q"', "1e999", "-", "nul", "-0.0e-0",
    "[" * 70 + "]" * 70, '{"k":"v",}', "[true,false,null]", '"x"', "12345678901234567890123",
]
_UNKNOWN_BYTES = [b'"\xff\xfe"', b'{"\xff":1}', b'"\xc3"']
_SPACES = ["", "", "", " ", "\t", "\r", "  ", " \t\r "]
_KEYS = {
    "market": ["id", "question", "category", "price", "liquidity", "volume_24h", "closes_at",
               "resolution_criteria", "authority_is_clear", "outcome_is_objective", "unknowns",
               "outcome", "yes_outcome", "no_outcome"],
    "signal": ["market_id", "type", "direction", "strength", "timestamp",
               "conflicts_with_existing", "source", "description"],
}


def _text(value: str) -> bytes:
    return value.encode()


def _values_for(key: str) -> st.SearchStrategy[bytes]:
    """Odd JSON spellings for a field, right or wrong for it."""
    numbers = st.from_regex(
        r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
    texts = st.text(max_size=12).map(lambda t: msgspec.json.encode(t)) | st.text(
        max_size=12).map(lambda t: json.dumps(t).encode())
    common = (st.sampled_from(_STRINGS).map(_text) | st.sampled_from(_RAW_STRINGS) | texts
              | st.just(b"null"))
    if key in ("price", "liquidity", "volume_24h"):
        floats = st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode())
        return st.sampled_from(_FLOATS).map(_text) | numbers.map(_text) | floats | common
    if key in ("unknowns", "strength"):
        return (st.sampled_from(_INTS).map(_text) | st.integers(-3, 8).map(lambda i: b"%d" % i)
                | common)
    if key in ("closes_at", "timestamp"):
        return st.sampled_from(_TIMES).map(lambda t: f'"{t}"'.encode()) | _times() | common
    if key == "category":
        return (st.sampled_from(_CATEGORIES).map(_text) | st.sampled_from(_CATEGORY_BYTES)
                | common)
    if key == "outcome":
        return st.sampled_from(_LITERALS).map(_text) | common
    if key in ("type", "direction"):
        return st.sampled_from(_SIGNAL_WORDS).map(_text) | common
    if key in ("authority_is_clear", "outcome_is_objective", "conflicts_with_existing"):
        return st.sampled_from(_BOOLS).map(_text) | common
    return common | st.sampled_from(_FLOATS[:6]).map(_text)


@st.composite
def _times(draw: st.DrawFn) -> bytes:
    """Times put together from parts, most of them in range."""
    year = draw(st.sampled_from(["2026", "1970", "9999", "0001", "0000", "2024", "1900"]))
    month = draw(st.sampled_from(["01", "02", "06", "12", "00", "13"]))
    day = draw(st.sampled_from(["01", "28", "29", "30", "31", "00", "32"]))
    separator = draw(st.sampled_from(["T", "t", " ", "_"]))
    clock = draw(st.sampled_from(["00:00:00", "23:59:59", "12:30:15", "24:00:00", "00:60:00"]))
    fraction = draw(st.sampled_from(["", ".", ".0", ".5", ".999999", ".9999995",
                                     ".99999949", ".000000500", ".123456789012"]))
    zone = draw(st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+23:59", "-23:59",
                                 "+0100", "-01:00", "+24:00", "+01:60", "+1", "+01:0"]))
    return f'"{year}-{month}-{day}{separator}{clock}{fraction}{zone}"'.encode()


@st.composite
def _mutated(draw: st.DrawFn, line: bytes, kind: str) -> bytes:
    """One real line, its members respelled and changed."""
    try:
        members = list(json.loads(line).items())
    except ValueError:
        return line
    pairs = [(json.dumps(key).encode(), json.dumps(value).encode()) for key, value in members]
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(["value", "drop", "repeat", "unknown", "key", "null"]))
        if change == "unknown":
            name = draw(st.sampled_from(["extra", "nested", "volume", "Price"]))
            value = draw(st.sampled_from(_UNKNOWN).map(_text) | st.sampled_from(_UNKNOWN_BYTES))
            pairs.insert(draw(st.integers(0, len(pairs))), (f'"{name}"'.encode(), value))
            continue
        if change == "key" and pairs:
            at = draw(st.integers(0, len(pairs) - 1))
            key = json.loads(pairs[at][0])
            escaped = "".join(f"\\u{ord(c):04x}" if i == 0 else c for i, c in enumerate(key))
            pairs[at] = (f'"{escaped}"'.encode(), pairs[at][1])
            continue
        key = draw(st.sampled_from(_KEYS[kind]))
        at = next((i for i, (k, _) in enumerate(pairs) if k == f'"{key}"'.encode()), None)
        if change == "drop":
            if at is not None:
                del pairs[at]
            continue
        value = b"null" if change == "null" else draw(_values_for(key))
        if change == "repeat" or at is None:
            pairs.insert(draw(st.integers(0, len(pairs))), (f'"{key}"'.encode(), value))
        else:
            pairs[at] = (pairs[at][0], value)
    space = draw(st.sampled_from(_SPACES)).encode()
    inner = draw(st.sampled_from(_SPACES)).encode()
    body = b",".join(inner + k + space + b":" + inner + v + space for k, v in pairs)
    return space + b"{" + body + (inner if not pairs else b"") + b"}" + space


@st.composite
def _line(draw: st.DrawFn, pool: list[bytes], kind: str) -> bytes:
    line = draw(st.sampled_from(pool))
    if draw(st.integers(0, 3)):
        line = draw(_mutated(line, kind))
    if not draw(st.integers(0, 7)):  # a byte changed, added, removed, or the line cut short
        at = draw(st.integers(0, max(0, len(line) - 1)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        byte = bytes([draw(st.sampled_from([0xFF, 0xC3, 0x80, 0x00, 0x22, 0x5C, 0x7B, 0x7D,
                                            0x2C, 0x3A, 0x20, 0x0D]) | st.integers(0, 255))])
        if edit == "flip":
            line = line[:at] + byte + line[at + 1 :]
        elif edit == "insert":
            line = line[:at] + byte + line[at:]
        elif edit == "delete":
            line = line[:at] + line[at + 1 :]
        else:
            line = line[:at]
    return line


def market_lines() -> st.SearchStrategy[bytes]:
    """One market line, real or mutated."""
    return _line(MARKET_LINES, "market")


def signal_lines() -> st.SearchStrategy[bytes]:
    """One signal line, real or mutated."""
    return _line(SIGNAL_LINES, "signal")


@st.composite
def blocks(draw: st.DrawFn, lines: st.SearchStrategy[bytes]) -> bytes:
    """Several lines as a piece holds them: newline-separated, the last newline optional,
    sometimes a blank line, two lines merged, a byte order mark or a line split in two."""
    chosen = draw(st.lists(lines, min_size=1, max_size=6))
    twist = draw(st.sampled_from(["", "", "", "blank", "merge", "split", "bom", "crlf"]))
    if twist == "blank":
        chosen.insert(draw(st.integers(0, len(chosen))), draw(st.sampled_from([b"", b" ", b"\t"])))
    elif twist == "merge" and len(chosen) > 1:
        chosen[0:2] = [chosen[0] + draw(st.sampled_from([b"", b" "])) + chosen[1]]
    elif twist == "split":
        at = draw(st.integers(0, len(chosen[0])))
        chosen[0:1] = [chosen[0][:at], chosen[0][at:]]
    elif twist == "crlf":
        chosen = [line + b"\r" for line in chosen]
    data = b"\n".join(chosen) + draw(st.sampled_from([b"\n", b""]))
    return b"\xef\xbb\xbf" + data if twist == "bom" else data


def as_lines(records: list[Any]) -> bytes:
    """Structs as compact JSON lines."""
    return b"".join(msgspec.json.encode(record) + b"\n" for record in records)

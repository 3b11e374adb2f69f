"""The native decoder: a task's market and signal lines straight to the kernel's columns.

The decoder is a small Rust library (`native/` in the source tree, standard library only),
built by `pip install` when `cargo` is on the PATH and loaded here through ctypes. It is
optional: without it, or with `batch.decoder = "msgspec"`, workers decode with msgspec as
before. It reads the schema of the `Market` and `Signal` models and validates what their
annotations validate; whatever it is not sure to read exactly as msgspec does (a line msgspec
may refuse, a number of more than 19 digits, an escaped time, a category that is not ASCII, a
blank line, ...) makes it decline the whole block, and the worker decodes that block with
msgspec, which accepts or refuses each line and words the refusal as always. What it accepts
yields the very columns msgspec's path builds, bit for bit (`tests/engine/test_native.py`
holds both promises against msgspec on mutated real lines).

Its schema is declared once, in the models: the library carries the text of the schema it was
written for, and it is used only while that text equals the one derived here from the models
(`schema_text`); a model changed without the decoder fails a test and leaves workers on
msgspec. Only the few `Market`s a cycle reports in full (candidates, held markets) are decoded
again with msgspec, from their lines, when first asked for (`LazyMarkets`); `evaluate`
describes the others from their columns (`LazyMarkets.brief`).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any, Final, Literal, overload

import msgspec
import numpy as np
import numpy.typing as npt

from pomabotd.domain.models import (
    CATEGORIES,
    CATEGORY_MIN_EDGE,
    SIGNAL_TYPES,
    Market,
    Signal,
    normalize_category,
)
from pomabotd.engine.kernels.columns import DIRECTIONS, MarketColumns, SignalColumns
from pomabotd.errors import ConfigError

__all__ = [
    "BUILD_HINT",
    "DECODERS",
    "Decoder",
    "LazyMarkets",
    "NativeMarkets",
    "NativeSignals",
    "available",
    "decode_markets",
    "decode_signals",
    "decoder_in_use",
    "library_schema",
    "problem",
    "schema_text",
]

#: `batch.decoder`: `auto` takes the native decoder when it is built, else msgspec.
DECODERS: Final = ("auto", "native", "msgspec")
Decoder = Literal["native", "msgspec"]
#: How to get the native decoder, for messages.
BUILD_HINT: Final = (
    "install pomabotd with a Rust toolchain on the PATH (`cargo`, any recent stable; no "
    "network needed): `pip install .` from the source tree builds it"
)
_LIBRARY: Final = "_native_decoder"
_DECODED: Final = 0
#: Bytes of the shortest line each decoder accepts, newline included (every required field,
#: compact, one-character id): the most lines a block can hold is its size over these.
_SHORTEST_MARKET: Final = len(b'{"id":"x","question":"","price":0,"liquidity":0}\n')
_SHORTEST_SIGNAL: Final = len(b'{"market_id":"x","type":"procedural","direction":"up",'
                              b'"strength":1,"timestamp":"2000-01-01T00:00:00Z"}\n')
_MARKET: Final = msgspec.json.Decoder(Market)
#: The columns a brief is made of, after its id, in `LazyMarkets.brief`'s order.
_BRIEF_COLUMNS: Final = ("category", "price", "liquidity", "authority_is_clear",
                         "outcome_is_objective")
_OTHER: Final = len(CATEGORIES) - 1
#: Each category code's minimum edge, as `market_columns` looks it up by name.
_MIN_EDGE: Final = np.array([CATEGORY_MIN_EDGE.get(name, CATEGORY_MIN_EDGE["other"])
                             for name in CATEGORIES])


class _Outcome(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int32),
        ("count", ctypes.c_size_t),
        ("line", ctypes.c_size_t),
        ("ids_used", ctypes.c_size_t),
        ("newline_in_id", ctypes.c_uint8),
        ("strangers", ctypes.c_size_t),
    ]


#: The columns each call fills, in the order of the library's `MarketColumns` and
#: `SignalColumns` (after their `rows`), with their element types.
_MARKET_OUT: Final = (
    ("price", np.float64), ("liquidity", np.float64), ("unknowns", np.float64),
    ("closes_at", np.int64), ("resolved", np.bool_), ("authority_is_clear", np.bool_),
    ("outcome_is_objective", np.bool_), ("category", np.uint8), ("line_start", np.int64),
    ("line_end", np.int64), ("id_hash", np.uint64), ("id_end", np.int64),
)
_SIGNAL_OUT: Final = (
    ("market", np.int64), ("timestamp", np.int64), ("kind", np.int8),
    ("direction", np.int8), ("strength", np.float64), ("conflicts", np.bool_),
)


class _MarketOut(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_size_t),
                *((name, ctypes.c_void_p) for name, _ in _MARKET_OUT),
                ("ids", ctypes.c_void_p), ("ids_capacity", ctypes.c_size_t)]


class _SignalOut(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_size_t), *((name, ctypes.c_void_p) for name, _ in _SIGNAL_OUT)]


def _columns(layout: tuple[tuple[str, Any], ...], rows: int) -> dict[str, npt.NDArray[Any]]:
    """Empty columns of `rows` elements for a call to fill (untouched pages cost nothing)."""
    return {name: np.empty(rows, dtype) for name, dtype in layout}


def _addresses(columns: dict[str, npt.NDArray[Any]]) -> dict[str, int]:
    return {name: column.ctypes.data for name, column in columns.items()}


def _type_text(info: msgspec.inspect.Type) -> str:
    """One field type as the library's schema text writes it."""
    mi = msgspec.inspect
    if isinstance(info, mi.UnionType):
        return "|".join(_type_text(part) for part in info.types)
    if isinstance(info, mi.NoneType):
        return "None"
    if isinstance(info, mi.StrType):
        if info.max_length is not None or info.pattern is not None:
            return f"str({info!r})"
        return f"str(min_length={info.min_length})" if info.min_length else "str"
    if isinstance(info, mi.FloatType | mi.IntType):
        name = "float" if isinstance(info, mi.FloatType) else "int"
        if info.gt is not None or info.lt is not None or info.multiple_of is not None:
            return f"{name}({info!r})"
        bounds = [f"{key}={value!r}" for key, value in (("ge", info.ge), ("le", info.le))
                  if value is not None]
        return f"{name}({','.join(bounds)})" if bounds else name
    if isinstance(info, mi.BoolType):
        return "bool"
    if isinstance(info, mi.DateTimeType):
        return f"datetime(tz={info.tz})"
    if isinstance(info, mi.LiteralType):
        return "Literal[" + ",".join(repr(value) for value in info.values) + "]"
    return f"?{info!r}"


def _struct_text(model: type[msgspec.Struct], name: str, post_init: str) -> str:
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    if info.forbid_unknown_fields or info.array_like or info.tag_field is not None:
        return f"{name}(options the decoder does not read: {info!r})"
    fields = []
    for field in info.fields:
        if field.default_factory is not msgspec.NODEFAULT:
            default = "?factory"
        else:
            default = "required" if field.required else repr(field.default)
        fields.append(f"{field.encode_name}:{_type_text(field.type)}={default}")
    return (f"{name}(unknown fields skipped; post_init {post_init})"
            f"{{{','.join(fields)}}}")


def _post_init_digest(model: type[msgspec.Struct]) -> str:
    """A digest of what a model's `__post_init__` runs (`none` without one): the decoder
    repeats it, so a change to it must reach the decoder too."""
    hook = getattr(model, "__post_init__", None)
    if hook is None:
        return "none"
    source = inspect.getsource(hook) + inspect.getsource(normalize_category)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@cache
def schema_text(market: type[Market] = Market, signal: type[Signal] = Signal) -> str:
    """The schema `market` and `signal` declare (the models by default), in the form of the
    library's `pmb_schema`: both structs' fields (names, types, bounds, defaults), the
    `__post_init__` the decoder repeats, and the codes the kernel's columns use."""
    return "\n".join([
        _struct_text(market, "Market", _post_init_digest(market)),
        _struct_text(signal, "Signal", _post_init_digest(signal)),
        "categories " + ",".join(CATEGORIES),
        "signal types " + ",".join(SIGNAL_TYPES),
        "directions " + ",".join(DIRECTIONS),
    ])


def _library_path() -> Path | None:
    here = Path(__file__).parent
    for suffix in EXTENSION_SUFFIXES:
        path = here / f"{_LIBRARY}{suffix}"
        if path.exists():
            return path
    return None


@cache
def _load() -> tuple[Any, str | None]:
    """The loaded library and None, or None and why it cannot be used."""
    path = _library_path()
    if path is None:
        return None, "the native decoder is not built"
    try:
        # PyDLL keeps the GIL through a call (CDLL would let it go): a decode takes
        # milliseconds, and taking the GIL back from another thread could cost as much again.
        library = ctypes.PyDLL(os.fspath(path))
        library.pmb_schema.restype = ctypes.c_char_p
        library.pmb_decode_markets.restype = ctypes.c_int32
        library.pmb_decode_markets.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_MarketOut),
            ctypes.POINTER(_Outcome),
        ]
        library.pmb_decode_signals.restype = ctypes.c_int32
        library.pmb_decode_signals.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
            ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_SignalOut),
            ctypes.POINTER(_Outcome),
        ]
        built_for = library.pmb_schema().decode()
    except (OSError, AttributeError, UnicodeDecodeError) as exc:
        return None, f"the native decoder at {path} cannot be loaded ({exc})"
    if built_for != schema_text():
        return None, ("the native decoder was built for other models than these (its schema "
                      "differs from Market's and Signal's): rebuild it")
    return library, None


def library_schema() -> str | None:
    """The schema text the built library carries, or None when there is no library."""
    path = _library_path()
    if path is None:
        return None
    library = ctypes.PyDLL(os.fspath(path))
    library.pmb_schema.restype = ctypes.c_char_p
    text: bytes = library.pmb_schema()
    return text.decode()


def problem() -> str | None:
    """Why the native decoder cannot be used here, or None when it can."""
    return _load()[1]


def available() -> bool:
    """True if the native decoder is built, loads, and reads these models' schema."""
    return _load()[0] is not None


def decoder_in_use(setting: str) -> Decoder:
    """The decoder `batch.decoder = setting` runs: `auto` takes native when available.
    Raises ConfigError for `native` when it is not."""
    if setting == "msgspec":
        return "msgspec"
    if available():
        return "native"
    if setting == "native":
        raise ConfigError(f"batch.decoder is 'native' but {problem()}; {BUILD_HINT}, or set "
                          "batch.decoder to 'auto' or 'msgspec'")
    return "msgspec"


class LazyMarkets(Sequence[Market]):
    """The `Market` of each line of a block, decoded with msgspec when first asked for (the
    kernel reads columns; only candidates and held markets are reported in full)."""

    __slots__ = ("_briefs", "_columns", "_data", "_decoded", "_ends", "_ids", "_starts")

    def __init__(self, data: bytes, starts: npt.NDArray[np.int64],
                 ends: npt.NDArray[np.int64], ids: _Ids,
                 columns: dict[str, npt.NDArray[Any]]) -> None:
        self._data = data
        self._starts = starts
        self._ends = ends
        self._ids = ids
        self._columns = columns
        self._decoded: dict[int, Market] = {}
        self._briefs: tuple[list[Any], ...] | None = None

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def decoded(self) -> int:
        """How many lines were decoded again, with msgspec, for their full `Market`."""
        return len(self._decoded)

    @overload
    def __getitem__(self, row: int) -> Market: ...

    @overload
    def __getitem__(self, row: slice) -> Sequence[Market]: ...

    def __getitem__(self, row: int | slice) -> Market | Sequence[Market]:
        if isinstance(row, slice):
            return [self[at] for at in range(*row.indices(len(self)))]
        market = self._decoded.get(row)
        if market is None:
            start, end = int(self._starts[row]), int(self._ends[row])
            market = self._decoded[row] = _MARKET.decode(self._data[start:end])
        return market

    def __iter__(self) -> Iterator[Market]:
        return (self[row] for row in range(len(self)))

    def brief(self, row: int) -> Market:
        """The market's brief (`columns.Briefs`), from the decoded columns and id: its line is
        not decoded again (`evaluate` describes every market, most by a brief)."""
        briefs = self._briefs
        if briefs is None:
            briefs = self._briefs = (
                self._ids.get(), *(self._columns[name].tolist() for name in _BRIEF_COLUMNS))
        ids, categories, prices, liquidities, clear, objective = briefs
        return Market(id=ids[row].decode(), question="", category=CATEGORIES[categories[row]],
                      price=prices[row], liquidity=liquidities[row],
                      authority_is_clear=clear[row], outcome_is_objective=objective[row])


class _Ids:
    """The ids of a natively decoded block: every id followed by a newline (`blob`), split
    on first use."""

    __slots__ = ("_split", "blob", "count", "id_end", "newline_in_id")

    def __init__(self, blob: bytes, count: int, id_end: npt.NDArray[np.int64],
                 newline_in_id: bool) -> None:
        self.blob = blob
        self.count = count
        self.id_end = id_end
        self.newline_in_id = newline_in_id
        self._split: list[bytes] | None = None

    def get(self) -> list[bytes]:
        """Each market's id, UTF-8 encoded."""
        if self._split is None:
            if not self.newline_in_id:
                self._split = self.blob.split(b"\n")[: self.count]
            else:
                ends = self.id_end.tolist()
                starts = [0, *(end + 1 for end in ends[:-1])]
                self._split = [self.blob[a:b] for a, b in zip(starts, ends, strict=True)]
        return self._split


class NativeMarkets:
    """A block of market lines decoded by the native decoder: its columns, and each market's
    id (`ids`), FNV-1a id hash (`hashes`, as `pieces.id_hashes` computes them) and line."""

    __slots__ = ("_ids", "columns", "count", "hashes", "id_end")

    def __init__(self, columns: MarketColumns, hashes: npt.NDArray[np.uint64], ids: _Ids) -> None:
        self.columns = columns
        self.count = len(hashes)
        self.hashes = hashes
        self.id_end = ids.id_end
        self._ids = ids

    @property
    def blob(self) -> bytes:
        """Every id followed by a newline, as the signals call reads them."""
        return self._ids.blob

    def ids(self) -> list[bytes]:
        """Each market's id, UTF-8 encoded."""
        return self._ids.get()

    def rows_of(self, market_ids: Iterable[str]) -> list[int]:
        """The rows of those of `market_ids` that are in this block."""
        wanted = [market_id.encode() for market_id in market_ids]
        if not wanted:
            return []
        keys = np.frombuffer(_hashes(wanted), np.uint64)
        found = np.flatnonzero(np.isin(self.hashes, keys)).tolist()
        ids = self.ids()
        chosen = set(wanted)
        return [row for row in found if ids[row] in chosen]


class NativeSignals:
    """A block of signal lines decoded by the native decoder: their columns (`market` is the
    row of each signal's market in its `NativeMarkets`, -1 when none), and how many name a
    market not there (`strangers`)."""

    __slots__ = ("columns", "count", "strangers")

    def __init__(self, columns: SignalColumns, strangers: int) -> None:
        self.columns = columns
        self.count = len(columns.market)
        self.strangers = strangers


def _hashes(keys: list[bytes]) -> bytes:
    from pomabotd.engine.pieces import id_hashes

    return id_hashes(keys)


def decode_markets(data: bytes) -> NativeMarkets | None:
    """The market lines of `data` decoded natively, or None when the decoder is not
    available or declines them (a line it is unsure of, a repeated id, no line at all):
    decode them with msgspec then."""
    library = _load()[0]
    if library is None or not data:
        return None
    rows = len(data) // _SHORTEST_MARKET + 1
    columns = _columns(_MARKET_OUT, rows)
    blob = np.empty(len(data) + 1, np.uint8)  # ids are never longer than their lines
    out = _MarketOut(rows=rows, ids=blob.ctypes.data, ids_capacity=len(blob),
                     **_addresses(columns))
    outcome = _Outcome()
    status = library.pmb_decode_markets(data, len(data), ctypes.byref(out),
                                        ctypes.byref(outcome))
    if status != _DECODED:
        return None
    got = {name: column[: outcome.count] for name, column in columns.items()}
    ids = _Ids(blob[: outcome.ids_used].tobytes(), outcome.count, got["id_end"],
               bool(outcome.newline_in_id))
    market_columns = MarketColumns(
        records=LazyMarkets(data, got["line_start"], got["line_end"], ids, got),
        price=got["price"],
        liquidity=got["liquidity"],
        unknowns=got["unknowns"],
        closes_at=got["closes_at"],
        resolved=got["resolved"],
        authority_is_clear=got["authority_is_clear"],
        outcome_is_objective=got["outcome_is_objective"],
        min_edge=_MIN_EDGE[got["category"]],
    )
    return NativeMarkets(market_columns, got["id_hash"], ids)


def decode_signals(data: bytes, markets: NativeMarkets) -> NativeSignals | None:
    """The signal lines of `data` decoded natively, each matched to its market among
    `markets`, or None when the decoder is not available or declines them."""
    library = _load()[0]
    if library is None:
        return None
    rows = len(data) // _SHORTEST_SIGNAL + 1 if data else 0
    columns = _columns(_SIGNAL_OUT, rows)
    strangers = 0
    if rows:
        out = _SignalOut(rows=rows, **_addresses(columns))
        outcome = _Outcome()
        blob = markets.blob
        status = library.pmb_decode_signals(
            data, len(data), blob, len(blob), markets.id_end.ctypes.data, markets.count,
            ctypes.byref(out), ctypes.byref(outcome))
        if status != _DECODED:
            return None
        strangers = int(outcome.strangers)
        rows = outcome.count
    return NativeSignals(
        SignalColumns(**{name: column[:rows] for name, column in columns.items()}), strangers)

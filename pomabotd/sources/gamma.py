"""Polymarket Gamma market objects -> pomabotd's markets, and Gamma snapshots on disk.

The mapping (docs/sources.md#polymarket-markets) is one function, `map_market`, shared by the live
source, `gamma:PATH` snapshots and replay:

- `outcomes` and `outcomePrices` are JSON-encoded strings. A market with exactly two outcomes is
  binary: its first outcome plays YES (`Yes`, but also `Over`, `Up` or the first of two teams)
  and both names are kept (`yes_outcome`, `no_outcome`) unless they are plainly Yes and No;
  `price` is `outcomePrices[0]` x 100.
  Another number of outcomes, or a missing, non-numeric, NaN, infinite or out-of-range price,
  refuses the record with a reason naming its id and the field.
- `liquidityNum` (else `liquidity`) -> `liquidity`, `volume24hr` -> `volume_24h`, `endDate` ->
  `closes_at`, `description` (else `resolutionSource`) -> `resolution_criteria`.
- A closed market whose prices read 1/0 resolved YES, 0/1 resolved NO (`outcome`).
- The category comes from `category`, then the events' `category`, tags and series, through
  `CATEGORY_WORDS`; a sports market type means sports; when neither says anything (most live
  objects carry no category and no tags), the question's words decide through
  `QUESTION_WORDS`; anything else is `other`.

Records are decoded with msgspec into structs holding only these fields.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import msgspec

from pomabotd.config import SourcesConfig
from pomabotd.domain.models import Market
from pomabotd.errors import InputError, SourceError
from pomabotd.sources.base import FetchContext, Source, SourceBatch, SourceStats
from pomabotd.sources.jsonl import read_bytes
from pomabotd.sources.offload import checked, off_loop
from pomabotd.wire import Rejected
from pomabotd.words import plural

__all__ = [
    "CATEGORY_WORDS",
    "QUESTION_WORDS",
    "SCHEME",
    "GammaFile",
    "GammaMarket",
    "category_of",
    "encode_markets",
    "map_market",
    "map_records",
    "price_points",
    "question_category",
    "read_snapshot",
    "record_id",
    "refused_reason",
    "write_snapshot",
]

def _words(text: str, category: str) -> dict[str, str]:
    return dict.fromkeys(text.split(), category)


#: Words found in a Gamma category, tag or series name -> pomabotd category. The first word of the
#: first name that has one decides; names are read in the order the module docstring gives.
CATEGORY_WORDS: Final[dict[str, str]] = {
    **_words(
        """politics political elections election president presidential senate congress house
        governor mayor parliament primary primaries trump biden democrats republicans vote""",
        "politics",
    ),
    **_words(
        """crypto cryptocurrency bitcoin btc ethereum eth solana sol xrp doge dogecoin token
        tokens defi nft stablecoin memecoin airdrop""",
        "crypto",
    ),
    **_words(
        """sports sport nba nfl mlb nhl wnba soccer football tennis atp wta golf pga f1 formula
        ufc mma boxing cricket esports counter dota lol valorant cfb cbb cwbb ncaa snhl khl liga
        laliga premier bundesliga serie champions europa olympics hockey baseball basketball
        rugby chess""",
        "sports",
    ),
    **_words(
        """economics economy business finance fed fomc inflation cpi gdp jobs unemployment
        recession rates stocks stock earnings equities ipo tariffs msft aapl tsla nvda spx
        nasdaq""",
        "economics",
    ),
    **_words(
        """entertainment culture pop movies movie film music oscars grammys emmys tv celebrities
        celebrity awards youtube streaming box""",
        "entertainment",
    ),
    **_words("weather temperature climate hurricane storm rain snow heat", "weather"),
    **_words(
        "technology tech ai openai science space spacex apple google app apps", "technology"
    ),
    **_words(
        "world geopolitics global war ukraine russia israel gaza iran china middle international",
        "world",
    ),
}

#: Words of a market's question -> pomabotd category, for a market whose category, tags and series
#: say nothing (most live Gamma objects carry none). The category with the most words in the
#: question wins; a tie goes to the category of the word that comes first. Only words that
#: rarely mean anything else are listed: a question none of them matches stays `other`.
QUESTION_WORDS: Final[dict[str, str]] = {
    **_words(
        """election elections electoral presidential president presidency senate senator
        congress congressional governor gubernatorial mayor mayoral parliament parliamentary
        primary primaries nomination nominee democrat democrats democratic republican
        republicans gop trump biden harris vance obama desantis newsom impeach impeachment
        pardon cabinet supreme scotus referendum ballot campaign minister""",
        "politics",
    ),
    **_words(
        """bitcoin btc ethereum eth ether solana xrp ripple dogecoin doge crypto cryptocurrency
        stablecoin coinbase binance memecoin defi nft altcoin usdt usdc tether cardano
        litecoin airdrop""",
        "crypto",
    ),
    **_words(
        """nba nfl mlb nhl wnba ncaa ufc mma f1 gp prix nascar fifa uefa playoff playoffs
        championship tournament mvp touchdown quarterback bowl olympics olympic medal tennis
        golf soccer football basketball baseball hockey boxing knockout esports dota valorant
        wimbledon""",
        "sports",
    ),
    **_words(
        """fed fomc inflation cpi gdp recession unemployment payrolls tariff tariffs interest
        earnings ipo stock stocks nasdaq dow spx treasury yields economy economic msft aapl
        nvda tsla""",
        "economics",
    ),
    **_words(
        """oscar oscars grammy grammys emmy emmys movie movies film album song billboard
        spotify concert halftime perform performance celebrity actor actress youtube tiktok
        mrbeast""",
        "entertainment",
    ),
    **_words(
        """temperature temperatures weather hurricane tornado rainfall snowfall heatwave
        celsius fahrenheit""",
        "weather",
    ),
    **_words(
        """openai chatgpt gpt ai anthropic google apple iphone android spacex starship nasa
        rocket software semiconductor robot robotics quantum""",
        "technology",
    ),
    **_words(
        """war ceasefire invasion nato ukraine russia russian israel israeli gaza hamas iran
        iranian syria china chinese taiwan korea netanyahu putin zelensky treaty sanctions
        missile nuclear""",
        "world",
    ),
}

#: `sources.markets = "gamma:PATH"` reads a snapshot.
SCHEME: Final = "gamma:"

_WORD: Final = re.compile(r"[a-z0-9]+")
_RESOLVED: Final[dict[tuple[float, float], Literal["YES", "NO"]]] = {
    (1.0, 0.0): "YES",
    (0.0, 1.0): "NO",
}


class _Named(msgspec.Struct):
    label: str | None = None
    slug: str | None = None
    title: str | None = None


class _Event(msgspec.Struct):
    category: str | None = None
    tags: list[_Named] | None = None
    series: list[_Named] | None = None
    seriesSlug: str | None = None


class GammaMarket(msgspec.Struct, kw_only=True):
    """The fields of a Gamma market object that pomabotd reads; the rest are never decoded."""

    id: str | int
    question: str | None = None
    outcomes: str | list[str] | None = None
    outcome_prices: str | list[str | float] | None = msgspec.field(
        default=None, name="outcomePrices"
    )
    liquidity_num: float | None = msgspec.field(default=None, name="liquidityNum")
    liquidity: str | float | None = None
    volume_24hr: float | None = msgspec.field(default=None, name="volume24hr")
    end_date: str | None = msgspec.field(default=None, name="endDate")
    description: str | None = None
    resolution_source: str | None = msgspec.field(default=None, name="resolutionSource")
    category: str | None = None
    events: list[_Event] | None = None
    sports_market_type: str | None = msgspec.field(default=None, name="sportsMarketType")
    closed: bool = False


class _Id(msgspec.Struct):
    id: str | int | None = None


class _Refusal(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


_DECODER: Final = msgspec.json.Decoder(GammaMarket)
_ID_DECODER: Final = msgspec.json.Decoder(_Id)
_STRINGS: Final = msgspec.json.Decoder(list[str | float])


def map_market(raw: bytes | msgspec.Raw, *, source: str = "gamma", position: int = 1) -> (
    Market | Rejected
):
    """Map one Gamma market object (its JSON bytes) onto a `Market`, or say why not.

    `position` (1-based, in the array or listing) and `source` only label a refusal.
    """
    data = bytes(raw)
    try:
        record = _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        return _refused_undecodable(data, source, position, exc)
    market_id = str(record.id).strip()
    if not market_id:
        return Rejected(source=source, line=position, field="id", message="empty id")
    try:
        return _market(record, market_id)
    except _Refusal as refusal:
        return Rejected(source=source, line=position, field=refusal.field,
                        message=refusal.message, record=market_id)


def record_id(raw: bytes | msgspec.Raw) -> str | None:
    """The id of a Gamma object as the mapping reads it, or None when it has none (or is not an
    object at all)."""
    try:
        found = _ID_DECODER.decode(bytes(raw)).id
    except msgspec.DecodeError:
        return None
    return None if found is None else str(found).strip() or None


def map_records(
    raws: Iterable[bytes | msgspec.Raw], source: str
) -> tuple[list[Market], list[Rejected]]:
    """Map a listing; a market id seen again is refused (the first one wins)."""
    markets: list[Market] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for position, raw in enumerate(checked(raws), start=1):
        mapped = map_market(raw, source=source, position=position)
        if isinstance(mapped, Rejected):
            rejected.append(mapped)
        elif mapped.id in seen:
            rejected.append(
                Rejected(source=source, line=position, field="id",
                         message="duplicate id, listed before", record=mapped.id)
            )
        else:
            seen.add(mapped.id)
            markets.append(mapped)
    return markets, rejected


def refused_reason(rejected: Sequence[Rejected], total: int) -> str:
    """Why a source whose every record was refused has nothing: the count and the first."""
    first = f"; first: {rejected[0]}" if rejected else ""
    return f"every record refused ({plural(total, 'record')}{first})"


def encode_markets(markets: Sequence[Market]) -> bytes:
    """The markets as wire-format JSON lines."""
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    for market in checked(markets):
        encoder.encode_into(market, buffer, -1)
        buffer.extend(b"\n")
    return bytes(buffer)


def read_snapshot(path: Path) -> list[msgspec.Raw]:
    """The Gamma objects of a snapshot (or any saved Gamma JSON array), undecoded.

    A missing file or one that is not a JSON array is an `InputError` naming the path.
    """
    data = read_bytes(path)
    try:
        return msgspec.json.decode(data, type=list[msgspec.Raw])
    except msgspec.DecodeError as exc:
        raise InputError(f"{path}: not a JSON array of Gamma market objects ({exc})") from None


def write_snapshot(path: Path, raws: Sequence[bytes | msgspec.Raw]) -> None:
    """Write the fetched objects as one JSON array, atomically: a reader sees old or new."""
    directory = path.parent if str(path.parent) else Path(".")
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed into place
        "wb", dir=directory, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(b"[")
            for index, raw in enumerate(raws):
                if index:
                    handle.write(b",\n")
                handle.write(bytes(raw))
            handle.write(b"]\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def category_of(record: GammaMarket) -> str:
    """The pomabotd category of a Gamma market by `CATEGORY_WORDS`, else its sports market type,
    else its question's words by `QUESTION_WORDS` (module docstring)."""
    for name in _category_names(record):
        for word in _WORD.findall(name.lower()):
            category = CATEGORY_WORDS.get(word)
            if category is not None:
                return category
    if record.sports_market_type:
        return "sports"
    return question_category(record.question or "")


def question_category(question: str) -> str:
    """The category most of the question's words in `QUESTION_WORDS` name (a tie goes to
    the first such word's), or `other`."""
    found = [c for c in map(QUESTION_WORDS.get, _WORD.findall(question.lower())) if c]
    if not found:
        return "other"
    counts = Counter(found)
    best = max(counts.values())
    return next(category for category in found if counts[category] == best)


def _category_names(record: GammaMarket) -> Iterator[str]:
    if record.category:
        yield record.category
    events = record.events or []
    for event in events:
        if event.category:
            yield event.category
    for event in events:
        for tag in event.tags or []:
            yield from (name for name in (tag.label, tag.slug) if name)
    for event in events:
        if event.seriesSlug:
            yield event.seriesSlug
        for series in event.series or []:
            yield from (name for name in (series.slug, series.title) if name)


def _market(record: GammaMarket, market_id: str) -> Market:
    question = (record.question or "").strip()
    if not question:
        raise _Refusal("question", "missing question")
    outcomes = _string_list(record.outcomes, "outcomes")
    if len(outcomes) != 2:
        raise _Refusal(
            "outcomes", f"{len(outcomes)} outcomes; only a two-outcome market is binary"
        )
    prices = _prices(record.outcome_prices)
    if len(prices) != len(outcomes):
        raise _Refusal(
            "outcomePrices", f"{len(prices)} prices for {len(outcomes)} outcomes"
        )
    resolution = (record.description or "").strip() or (record.resolution_source or "").strip()
    names = _outcome_names(outcomes)
    return Market(
        id=market_id,
        question=question,
        category=category_of(record),
        price=_points(prices[0]),
        liquidity=_liquidity(record),
        volume_24h=_non_negative(record.volume_24hr, "volume24hr"),
        closes_at=_end_date(record.end_date),
        resolution_criteria=resolution or None,
        outcome=_RESOLVED.get((prices[0], prices[1])) if record.closed else None,
        yes_outcome=names[0],
        no_outcome=names[1],
    )


def _outcome_names(outcomes: list[str]) -> tuple[str | None, str | None]:
    """The sides' names, kept only where they are not plainly Yes and No."""
    yes, no = str(outcomes[0]), str(outcomes[1])
    if (yes.strip().lower(), no.strip().lower()) == ("yes", "no"):
        return None, None
    return yes, no


def _string_list(value: str | list[str] | None, field: str) -> list[str]:
    if value is None:
        raise _Refusal(field, "missing")
    if isinstance(value, list):
        return value
    try:
        items = _STRINGS.decode(value)
    except msgspec.DecodeError:
        raise _Refusal(field, f"not a JSON-encoded list: {value[:60]!r}") from None
    return [str(item) for item in items]


def price_points(value: object) -> float:
    """A Gamma price, 0-1 as a number or a numeric string (as `outcomePrices` holds them), in
    points: x 100, rounded as the mapping rounds `price`. ValueError says what is wrong."""
    return _points(_unit_price(value))


def _points(price: float) -> float:
    return round(price * 100.0, 6)


def _unit_price(item: object) -> float:
    """A Gamma price as a float from 0 to 1; ValueError says why it is not one."""
    if isinstance(item, bool) or not isinstance(item, str | int | float):
        raise ValueError(f"price {item!r} is not a number")
    try:
        price = float(item)
    except ValueError:
        raise ValueError(f"price {item!r} is not a number") from None
    if not math.isfinite(price):
        raise ValueError(f"price {item!r} is not a finite number")
    if not 0.0 <= price <= 1.0:
        raise ValueError(f"price {item!r} is outside 0-1")
    return price


def _prices(value: str | list[str | float] | None) -> list[float]:
    if value is None:
        raise _Refusal("outcomePrices", "missing")
    if isinstance(value, str):
        try:
            items: list[str | float] = _STRINGS.decode(value)
        except msgspec.DecodeError:
            raise _Refusal("outcomePrices", f"not a JSON-encoded list: {value[:60]!r}") from None
    else:
        items = value
    prices: list[float] = []
    for item in items:
        try:
            prices.append(_unit_price(item))
        except ValueError as exc:
            raise _Refusal("outcomePrices", str(exc)) from None
    return prices


def _liquidity(record: GammaMarket) -> float:
    if record.liquidity_num is not None:
        return _non_negative(record.liquidity_num, "liquidityNum")
    if record.liquidity is None or record.liquidity == "":
        return 0.0
    try:
        value = float(record.liquidity)
    except ValueError:
        raise _Refusal("liquidity", f"{record.liquidity!r} is not a number") from None
    return _non_negative(value, "liquidity")


def _non_negative(value: float | None, field: str) -> float:
    if value is None:
        return 0.0
    if not math.isfinite(value) or value < 0:
        raise _Refusal(field, f"{value!r} is not a finite number >= 0")
    return value


def _end_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _Refusal("endDate", f"{value!r} is not an ISO 8601 time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _refused_undecodable(
    data: bytes, source: str, position: int, exc: msgspec.DecodeError
) -> Rejected:
    """A record msgspec refused: name its id when it has one, and the field msgspec named."""
    try:
        found = _ID_DECODER.decode(data).id
    except msgspec.DecodeError:
        found = None
    text = str(exc)
    field: str | None = None
    if " - at `$." in text:
        text, _, path = text.rpartition(" - at `$.")
        field = path.rstrip("`")
    elif isinstance(exc, msgspec.ValidationError):
        field = "$"
    return Rejected(
        source=source, line=position, field=field, message=text.replace("`", ""),
        record=None if found is None else str(found),
    )


class GammaFile(Source):
    """`gamma:PATH`: a snapshot saved by `--save-snapshot`, or any saved Gamma JSON array."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._path = path

    @classmethod
    def from_config(cls, argument: str, config: SourcesConfig) -> GammaFile:
        """The file after `gamma:`."""
        return cls(Path(argument))

    async def fetch(self, context: FetchContext) -> SourceBatch:
        """The file's markets mapped as the live source maps them (off the event loop);
        refusals are counted."""
        raws = await off_loop(read_snapshot, self._path)
        markets, rejected = await off_loop(map_records, raws, self.name)
        if not markets:
            why = refused_reason(rejected, len(raws)) if raws else "the file lists none"
            raise SourceError(f"{self.name}: no usable markets ({why})", source=self.name,
                              stats=SourceStats(records_refused=len(rejected)))
        return SourceBatch(
            markets=await off_loop(encode_markets, markets),
            rejected=tuple(rejected),
            stats=SourceStats(records_refused=len(rejected)),
        )

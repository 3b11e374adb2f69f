"""RSS 2.0 and Atom news feeds (`[sources] feeds = [...]`): fetched, guarded, remembered.

Each cycle the source

1. reads every feed that is due, at most `feed_concurrency` at once: a URL over HTTP (with the
   deadline, size cap and retries of `pomabotd.sources.http`, and `If-None-Match` /
   `If-Modified-Since` from the last good response, so a 304 costs nothing), a local path from
   disk: a regular file only (a FIFO or device is refused, never waited on), read off the event
   loop within the same deadline and size cap. A feed read less than `feed_min_interval_s` ago
   is not read again;
2. parses the bytes with defusedxml first, so entity-expansion bombs, external entities and
   malformed XML are refused (and logged with the feed's name) before feedparser sees them;
3. remembers items across feeds and cycles, keyed by id and link: an item already seen through
   any feed is a duplicate and is not counted twice. The memory holds the last `news_memory`
   items, and every remembered item is matched against the cycle's markets
   (`pomabotd.sources.news_signals`), so a market keeps the signals of news read in earlier
   cycles while it lasts.

A feed that fails is logged and counted; the others still run. When every feed fails and
nothing is remembered from before, the source raises `SourceError`. A feed is an http:// or
https:// URL or a file path; anything else (a `file://` URL among them, which is answered with
the plain path to write instead) is refused when the source is built, as a configuration error.
"""

from __future__ import annotations

import asyncio
import calendar
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit
from urllib.request import url2pathname
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree
import feedparser
import httpx
import msgspec

from pomabotd.config import SourcesConfig
from pomabotd.domain.models import Signal
from pomabotd.errors import ConfigError, FetchError, SourceError
from pomabotd.files import read_regular
from pomabotd.log import logger
from pomabotd.redact import redact_url
from pomabotd.sources.base import FetchContext, Source, SourceBatch, SourceStats
from pomabotd.sources.http import HttpLimits, Sleep, get, new_client
from pomabotd.sources.news_signals import MarketIndex, NewsItem, is_official, signals_from_news
from pomabotd.sources.offload import checked, off_loop
from pomabotd.wire import Lines, read_lines
from pomabotd.words import plural

__all__ = ["NAME", "FeedsSource", "parse_feed"]

NAME: Final = "feeds"
_KB: Final = 1024
#: `scheme://` at the start of a feed: a URL, which must be one pomabotd fetches.
_URL_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class _Question(msgspec.Struct):
    id: str = ""
    question: str = ""


_QUESTION: Final = msgspec.json.Decoder(_Question)


class _FeedState:
    """What is kept about one feed between cycles."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.name = redact_url(spec)
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.read_at: float | None = None


class _Parsed(msgspec.Struct, frozen=True):
    title: str | None
    items: list[NewsItem]


def parse_feed(data: bytes, spec: str, first_seen: datetime) -> tuple[str, list[NewsItem]]:
    """The feed's name and items; refuses (FetchError) XML that defusedxml will not accept.

    `spec` (the configured URL or path) names the feed when it has no title and decides its
    authority with the feed's own link; items without a date take `first_seen`.
    """
    shown = redact_url(spec)
    try:
        defusedxml.ElementTree.fromstring(data)
    except defusedxml.DefusedXmlException as exc:
        raise FetchError(
            f"feed {shown}: refused unsafe XML ({type(exc).__name__}: {exc})"
        ) from None
    except ParseError as exc:
        raise FetchError(f"feed {shown}: malformed XML ({exc})") from None
    except Exception as exc:  # whatever hostile input trips fails this feed alone
        raise FetchError(f"feed {shown}: cannot be parsed ({type(exc).__name__}: {exc})") from None
    try:
        parsed: Any = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    except Exception as exc:  # a parser bug on hostile input must not end the cycle
        raise FetchError(f"feed {shown}: cannot be parsed ({type(exc).__name__}: {exc})") from None
    if parsed.get("version", "") == "" and not parsed.entries:
        raise FetchError(f"feed {shown}: not an RSS or Atom feed")
    feed = parsed.feed
    name = str(feed.get("title") or "").strip() or shown
    official = is_official(urlsplit(spec).hostname or "") or is_official(
        urlsplit(str(feed.get("link") or "")).hostname or ""
    )
    items = [item for item in _items(parsed.entries, name, official, first_seen) if item.key]
    return name, items


def _items(
    entries: list[Any], feed: str, official: bool, first_seen: datetime
) -> Iterator[NewsItem]:
    for entry in entries:
        when = entry.get("published_parsed") or entry.get("updated_parsed")
        timestamp = (
            datetime.fromtimestamp(calendar.timegm(when), UTC) if when is not None else first_seen
        )
        link = str(entry.get("link") or "").strip()
        key = str(entry.get("id") or "").strip() or link
        yield NewsItem(
            key=key,
            link=link,
            title=" ".join(str(entry.get("title") or "").split()),
            body=str(entry.get("summary") or ""),
            timestamp=timestamp,
            feed=feed,
            official=official,
        )


class FeedsSource(Source):
    """Signals from news feeds, for the markets loaded this cycle."""

    def __init__(
        self,
        feeds: tuple[str, ...],
        *,
        limits: HttpLimits,
        min_interval_s: float = 300.0,
        concurrency: int = 4,
        memory: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = NAME
        for spec in feeds:
            _check_spec(spec)
        self._feeds = [_FeedState(spec) for spec in feeds]
        self._limits = limits
        self._min_interval_s = min_interval_s
        self._concurrency = concurrency
        self._memory_size = memory
        self._clock = clock
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        self._items: OrderedDict[str, NewsItem] = OrderedDict()
        self._aliases: OrderedDict[str, str] = OrderedDict()
        self._keywords: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_config(cls, config: SourcesConfig) -> FeedsSource:
        """The source `sources.feeds` lists; ConfigError for a feed that is neither an
        http(s) URL nor a path."""
        return cls(
            config.feeds,
            limits=HttpLimits(
                deadline_s=config.request_deadline_s,
                max_bytes=config.feed_max_kb * _KB,
                retry_attempts=config.retry_attempts,
                retry_max_wait_s=config.retry_max_wait_s,
            ),
            min_interval_s=config.feed_min_interval_s,
            concurrency=config.feed_concurrency,
            memory=config.news_memory,
        )

    async def fetch(self, context: FetchContext) -> SourceBatch:
        """Read the due feeds, remember their new items, and match every item to the markets."""
        gate = asyncio.Semaphore(self._concurrency)

        async def poll(state: _FeedState) -> _Parsed | FetchError | None:
            async with gate:
                try:
                    return await self._read(state, context.as_of)
                except FetchError as exc:
                    return exc

        results = await asyncio.gather(*(poll(state) for state in self._feeds))
        ok = failed = unchanged = fresh = duplicates = 0
        errors: dict[str, int] = {}
        for state, result in zip(self._feeds, results, strict=True):
            if isinstance(result, FetchError):
                failed += 1
                errors[state.name] = errors.get(state.name, 0) + 1
                shown = redact_url(state.spec)
                logger.bind(event="feed_failed", source=NAME, feed=shown).warning(
                    "feed {} failed: {}", state.name, result
                )
            elif result is None:
                unchanged += 1
            else:
                ok += 1
                added = self._remember(result.items)
                fresh += added
                duplicates += len(result.items) - added
        if failed == len(self._feeds) and not self._items:
            first = next(str(r) for r in results if isinstance(r, FetchError))
            raise SourceError(
                f"{NAME}: every feed failed ({plural(failed, 'feed')}) and none was read "
                f"before (first: {first})",
                source=NAME,
                stats=SourceStats(fetch_errors=errors, feeds_failed=failed),
            )
        index, signals, lines = await off_loop(
            _match, context.markets, list(self._items.values()), context.as_of, self._keywords
        )
        self._keywords = index.keywords_of  # this cycle's questions, for the next cycle
        logger.bind(event="feeds_read", source=NAME).info(
            "feeds: {} read, {} unchanged, {} failed; {}, {}, {} remembered; {} for {}",
            ok, unchanged, failed, plural(fresh, "new item"), plural(duplicates, "duplicate"),
            len(self._items), plural(len(signals), "signal"), plural(len(index), "market"),
        )
        return SourceBatch(
            signals=lines,
            stats=SourceStats(
                fetch_errors=errors,
                feeds_ok=ok,
                feeds_failed=failed,
                feeds_unchanged=unchanged,
                news_items=fresh,
                news_duplicates=duplicates,
                news_signals=len(signals),
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _read(self, state: _FeedState, as_of: datetime) -> _Parsed | None:
        """The parsed feed, or None when it is not due or has not changed."""
        now = self._clock()
        if state.read_at is not None and now - state.read_at < self._min_interval_s:
            return None
        if _is_url(state.spec):
            if self._client is None:
                self._client = new_client()
            headers = {}
            if state.etag:
                headers["If-None-Match"] = state.etag
            if state.last_modified:
                headers["If-Modified-Since"] = state.last_modified
            fetched = await get(self._client, state.spec, self._limits, headers=headers,
                                what=f"feed {state.name}", sleep=self._sleep)
            state.read_at = now
            if fetched.status == 304:
                return None
            state.etag, state.last_modified = fetched.etag, fetched.last_modified
            data = fetched.body
        else:
            data = await _read_file(Path(state.spec), self._limits)
            state.read_at = now
        title, items = await off_loop(parse_feed, data, state.spec, as_of)
        state.name = title
        return _Parsed(title, items)

    def _remember(self, items: list[NewsItem]) -> int:
        """Keep the items not seen before (by id or link); returns how many were new."""
        added = 0
        for item in items:
            keys = [key for key in (item.key, item.link) if key]
            if any(key in self._aliases for key in keys):
                continue
            self._items[item.key] = item
            for key in keys:
                self._aliases[key] = item.key
            added += 1
        while len(self._items) > self._memory_size:
            _, dropped = self._items.popitem(last=False)
            for key in (dropped.key, dropped.link):
                self._aliases.pop(key, None)
        return added


def _match(
    markets: Lines, items: list[NewsItem], as_of: datetime,
    known: dict[str, tuple[str, ...]],
) -> tuple[MarketIndex, list[Signal], bytes]:
    """Index the cycle's markets (with the keywords of the questions `known` from the last
    cycle), match the remembered items, encode the signals: CPU work, run off the event loop,
    and stopped within a slice if the cycle is cancelled."""
    index = MarketIndex(checked(_questions(read_lines(markets))), known)
    signals = signals_from_news(index, checked(items, 64), as_of)
    encoder = msgspec.json.Encoder()
    lines = bytearray()
    for signal in signals:
        encoder.encode_into(signal, lines, -1)
        lines.extend(b"\n")
    return index, signals, bytes(lines)


def _is_url(spec: str) -> bool:
    return spec.lower().startswith(("http://", "https://"))


def _check_spec(spec: str) -> None:
    """Refuse (ConfigError) a feed that is a URL of a scheme other than http(s)."""
    scheme = _URL_SCHEME.match(spec)
    if scheme is None or scheme.group(1).lower() in ("http", "https"):
        return
    if scheme.group(1).lower() == "file":
        path = url2pathname(urlsplit(spec).path)
        raise ConfigError(
            f"sources.feeds {spec!r} is a file:// URL; a local feed is written as its plain "
            f"path: {path!r}"
        )
    raise ConfigError(
        f"sources.feeds {redact_url(spec)!r} is neither an http:// or https:// URL nor a file "
        "path"
    )


async def _read_file(path: Path, limits: HttpLimits) -> bytes:
    """A local feed, read off the event loop within the fetch deadline and size cap."""
    try:
        async with asyncio.timeout(limits.deadline_s):
            data = await off_loop(read_regular, path, limits.max_bytes)
    except TimeoutError:
        raise FetchError(
            f"feed {path}: not read within the deadline of {limits.deadline_s:g} s (a network "
            "file system that stopped answering?); abandoned"
        ) from None
    except OSError as exc:
        raise FetchError(f"feed {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > limits.max_bytes:
        raise FetchError(
            f"feed {path}: larger than the cap of {limits.max_bytes:,} bytes; not read"
        )
    return data


def _questions(markets: bytes) -> Iterator[tuple[str, str]]:
    """(id, question) of every market line that has an id; bad lines are the engine's to report."""
    decode = _QUESTION.decode
    for line in markets.split(b"\n"):
        if not line.strip():
            continue
        try:
            found = decode(line)
        except msgspec.DecodeError:
            continue
        if found.id:
            yield found.id, found.question

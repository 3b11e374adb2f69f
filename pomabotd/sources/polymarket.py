"""Open Polymarket markets from the public Gamma API (`--markets polymarket`).

Paging: the keyset endpoint (`/markets/keyset`, `limit` and `after_cursor`, answered with
`{"markets": [...], "next_cursor": ...}`) is tried first; when the server does not offer it
(404, 405, 410 or 501 on the first page) the source falls back to the legacy offset paging of
`/markets` for the rest of its life. Either way the server is asked to filter: `closed=false`,
`active=true`, and `liquidity_num_min` when `sources.polymarket_min_liquidity` is set. Paging
stops at the last page, at `sources.polymarket_max_markets`, or when a cursor repeats.

A page that cannot be fetched (after retries) or decoded ends the paging: the markets already
fetched still run and the failure is logged and counted. Only when nothing usable arrived does
the source raise `SourceError`, which fails the cycle.

Held markets (`FetchContext.held`, those of open positions) that the listing lacks are fetched
by id, `/markets?id=A&id=B...` without the open-market filters, a page of ids at a time: a held
market that closed is no longer listed, and only its closed object, priced 1/0 or 0/1, tells
the cycle that the position resolved. An id the server does not return stays missing (the
cycle counts it); a failed request is logged and counted like a failed page, and the listing
still runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx
import msgspec

from pomabotd.config import SourcesConfig
from pomabotd.errors import FetchError, InputError, SourceError
from pomabotd.log import logger
from pomabotd.sources import gamma
from pomabotd.sources.base import FetchContext, Source, SourceBatch, SourceStats
from pomabotd.sources.http import HttpLimits, Params, Sleep, TransientBody, get, new_client
from pomabotd.sources.offload import checked, off_loop

__all__ = ["NAME", "PolymarketSource"]

NAME: Final = "polymarket"
_NO_KEYSET: Final = frozenset({404, 405, 410, 501})
_MB: Final = 1024 * 1024


class _KeysetPage(msgspec.Struct):
    """A keyset page: `markets` is required, so that an object without it (an error the
    server answered with 200) is not read as an empty last page."""

    markets: list[msgspec.Raw]
    next_cursor: str | None = None
    error: Any = None


class _ErrorObject(msgspec.Struct):
    """What an error answer may say about itself."""

    error: Any = None
    status: int | str | None = None
    code: int | str | None = None
    status_code: int | str | None = msgspec.field(default=None, name="statusCode")


_T = TypeVar("_T")

_KEYSET_PAGE: Final = msgspec.json.Decoder(_KeysetPage)
_OFFSET_PAGE: Final = msgspec.json.Decoder(list[msgspec.Raw])
_ERROR_OBJECT: Final = msgspec.json.Decoder(_ErrorObject)
#: Words by which an error answer says it is temporary: such a page is asked for again.
_TRANSIENT_WORDS: Final = (
    "timeout", "timed out", "temporar", "unavailable", "try again", "retry", "rate limit",
    "too many requests", "overload", "busy", "throttl",
)
#: How much of a body that is not a listing its error message quotes.
_QUOTED: Final = 160


class PolymarketSource(Source):
    """Every open market, fetched anew each cycle through one kept connection pool."""

    reads = frozenset({
        "sources.polymarket_url", "sources.polymarket_page_size",
        "sources.polymarket_min_liquidity", "sources.polymarket_max_markets",
        "sources.save_snapshot",
    })

    def __init__(
        self,
        base_url: str,
        *,
        limits: HttpLimits,
        page_size: int = 100,
        min_liquidity: float = 0.0,
        max_markets: int = 100_000,
        snapshot: Path | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = NAME
        self._base = base_url.rstrip("/")
        self._limits = limits
        self._page_size = page_size
        self._min_liquidity = min_liquidity
        self._max_markets = max_markets
        self._snapshot = snapshot
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        self._keyset = True

    @classmethod
    def from_config(cls, argument: str, config: SourcesConfig) -> PolymarketSource:
        """The source `sources.markets = "polymarket"` names."""
        return cls(
            config.polymarket_url,
            limits=HttpLimits(
                deadline_s=config.request_deadline_s,
                max_bytes=int(config.max_response_mb * _MB),
                retry_attempts=config.retry_attempts,
                retry_max_wait_s=config.retry_max_wait_s,
            ),
            page_size=config.polymarket_page_size,
            min_liquidity=config.polymarket_min_liquidity,
            max_markets=config.polymarket_max_markets,
            snapshot=Path(config.save_snapshot) if config.save_snapshot else None,
        )

    async def fetch(self, context: FetchContext) -> SourceBatch:
        """This cycle's open markets, and the held ones the listing lacks, as wire lines, with
        the refused records."""
        raws, failure = await self._listing()
        fetch_errors = {NAME: 1} if failure is not None else {}
        if failure is not None and not raws:
            raise SourceError(f"{NAME}: no markets fetched: {failure}", source=NAME,
                              stats=SourceStats(fetch_errors=fetch_errors))
        if context.held:
            assert self._client is not None
            listed = await off_loop(_listed_ids, raws)
            unlisted = sorted(context.held - listed)
            if unlisted and not await self._held(self._client, unlisted, raws):
                fetch_errors[NAME] = fetch_errors.get(NAME, 0) + 1
        if self._snapshot is not None:
            try:
                gamma.write_snapshot(self._snapshot, raws)
            except OSError as exc:
                raise InputError(
                    f"sources.save_snapshot {self._snapshot}: cannot be written "
                    f"({exc.strerror or exc})"
                ) from None
            logger.bind(event="snapshot_saved", source=NAME, path=str(self._snapshot)).info(
                "{}: saved {} market objects to {}", NAME, len(raws), self._snapshot
            )
        # Mapping tens of thousands of records is CPU work: off the event loop, so a daemon's
        # status endpoint keeps answering meanwhile, and stopped if the cycle is cancelled.
        markets, rejected = await off_loop(gamma.map_records, raws, NAME)
        if not markets:
            why = gamma.refused_reason(rejected, len(raws)) if raws else "the server listed none"
            raise SourceError(
                f"{NAME}: no usable open markets ({why})", source=NAME,
                stats=SourceStats(fetch_errors=fetch_errors, records_refused=len(rejected)),
            )
        return SourceBatch(
            markets=await off_loop(gamma.encode_markets, markets),
            rejected=tuple(rejected),
            stats=SourceStats(fetch_errors=fetch_errors, records_refused=len(rejected)),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _listing(self) -> tuple[list[msgspec.Raw], str | None]:
        """Every page's objects, and why paging stopped early (None when it did not)."""
        if self._client is None:
            self._client = new_client()
        raws: list[msgspec.Raw] = []
        try:
            if self._keyset:
                try:
                    await self._keyset_pages(self._client, raws)
                    return raws, None
                except FetchError as exc:
                    if raws or exc.status not in _NO_KEYSET:
                        raise
                    self._keyset = False
                    logger.bind(event="offset_paging", source=NAME, status=exc.status).info(
                        "{}: no keyset paging here (HTTP {}); using offset paging",
                        NAME, exc.status,
                    )
            await self._offset_pages(self._client, raws)
        except FetchError as exc:
            if raws:  # with nothing fetched, the cycle fails and its one error line says why
                logger.bind(event="fetch_failed", source=NAME, fetched=len(raws)).warning(
                    "{}: paging stopped after {} markets, which still run: {}",
                    NAME, len(raws), exc,
                )
            return raws, str(exc)
        return raws, None

    async def _held(
        self, client: httpx.AsyncClient, ids: list[str], raws: list[msgspec.Raw]
    ) -> bool:
        """Append the objects of the held markets `ids` (not in the listing) to `raws`, a page
        of ids per request; False when a request failed (logged)."""
        url = f"{self._base}/markets"
        wanted = set(ids)
        found = 0
        for start in range(0, len(ids), self._page_size):
            chunk = ids[start : start + self._page_size]
            params = httpx.QueryParams([("limit", len(chunk)), *(("id", i) for i in chunk)])
            try:
                number = start // self._page_size + 1
                page = await self._page(client, url, params, _OFFSET_PAGE, number, start)
            except FetchError as exc:
                logger.bind(event="held_fetch_failed", source=NAME, held=len(ids)).warning(
                    "{}: the held markets missing from the listing could not be fetched by "
                    "id; their positions stay open this cycle: {}", NAME, exc,
                )
                return False
            for raw in page:  # only what was asked for, once, whatever the server adds
                market_id = gamma.record_id(raw)
                if market_id in wanted:
                    wanted.discard(market_id)
                    raws.append(raw)
                    found += 1
        logger.bind(event="held_fetched", source=NAME, asked=len(ids), found=found).info(
            "{}: fetched {} of {} held markets missing from the open listing by id",
            NAME, found, len(ids),
        )
        return True

    def _filters(self) -> dict[str, str | int | float]:
        params: dict[str, str | int | float] = {
            "limit": self._page_size,
            "closed": "false",
            "active": "true",
        }
        if self._min_liquidity > 0:
            params["liquidity_num_min"] = self._min_liquidity
        return params

    async def _keyset_pages(self, client: httpx.AsyncClient, raws: list[msgspec.Raw]) -> None:
        url = f"{self._base}/markets/keyset"
        params = self._filters()
        seen: set[str] = set()
        listed = _Listed(raws)
        number = 0
        while len(raws) < self._max_markets:
            number += 1
            page = await self._page(client, url, params, _KEYSET_PAGE, number, len(raws))
            listed.add(page.markets, self._max_markets)
            cursor = page.next_cursor
            if not page.markets or not cursor:
                return
            if cursor in seen:
                logger.bind(event="cursor_repeated", source=NAME, cursor=cursor).warning(
                    "{}: the server repeated a cursor; stopping at {} markets", NAME, len(raws)
                )
                listed.log_repeats()
                return
            seen.add(cursor)
            params = {**params, "after_cursor": cursor}
        listed.log_repeats()
        self._log_cap()

    async def _offset_pages(self, client: httpx.AsyncClient, raws: list[msgspec.Raw]) -> None:
        url = f"{self._base}/markets"
        filters = self._filters()
        listed = _Listed(raws)
        number = 0
        offset = 0
        while len(raws) < self._max_markets:
            number += 1
            params = {**filters, "offset": offset}
            page = await self._page(client, url, params, _OFFSET_PAGE, number, len(raws))
            listed.add(page, self._max_markets)
            offset += len(page)
            if len(page) < self._page_size:
                listed.log_repeats()
                return
        listed.log_repeats()
        self._log_cap()

    async def _page(
        self,
        client: httpx.AsyncClient,
        url: str,
        params: Params,
        decoder: msgspec.json.Decoder[_T],
        number: int,
        offset: int,
    ) -> _T:
        """Page `number`, decoded as a listing within the fetch (so a transient error answer
        is retried like a 5xx)."""
        pages: list[_T] = []

        def check(body: bytes) -> None:
            pages.append(_as_listing(decoder, body, url, number, offset))

        await get(client, url, self._limits, params=params, what=NAME, sleep=self._sleep,
                  check=check)
        return pages[-1]

    def _log_cap(self) -> None:
        logger.bind(event="max_markets", source=NAME).warning(
            "{}: stopped at sources.polymarket_max_markets = {}", NAME, self._max_markets
        )


class _Listed:
    """The objects of one listing, each kept once: a page the server sends again (a cursor
    repeated, offsets shifting under a live listing) repeats objects, which are not records
    to refuse but the same record seen twice. Only byte-identical objects count as repeats;
    two different objects with one id are still refused by the mapping."""

    def __init__(self, raws: list[msgspec.Raw]) -> None:
        self._raws = raws
        self._seen: set[bytes] = set()
        self.repeats = 0

    def add(self, page: list[msgspec.Raw], limit: int) -> None:
        for raw in page:
            if len(self._raws) >= limit:
                return
            data = bytes(raw)
            if data in self._seen:
                self.repeats += 1
                continue
            self._seen.add(data)
            self._raws.append(raw)

    def log_repeats(self) -> None:
        if self.repeats:
            logger.bind(event="markets_repeated", source=NAME, repeated=self.repeats).warning(
                "{}: the server sent {} market objects again; each is kept once",
                NAME, self.repeats,
            )


def _listed_ids(raws: list[msgspec.Raw]) -> set[str | None]:
    """The ids of a listing's objects (work for `off_loop`: it stops when cancelled)."""
    return {gamma.record_id(raw) for raw in checked(raws)}


def _as_listing(
    decoder: msgspec.json.Decoder[_T], body: bytes, url: str, number: int, offset: int
) -> _T:
    """A page decoded as a listing; a body that is not one is a fetch error quoting its start:
    `TransientBody` (asked again, like a 5xx) when it says it failed for now, else FetchError."""
    try:
        page = decoder.decode(body)
        error = getattr(page, "error", None)
        if error is None:
            return page
        why = "it carries an error"
    except msgspec.DecodeError as exc:
        why = str(exc)
    text = " ".join(body[: _QUOTED * 4].decode("utf-8", "replace").split())
    quoted = text[:_QUOTED]
    more = "..." if len(text) > _QUOTED or len(body) > _QUOTED * 4 else ""
    message = (f"{NAME}: page {number} of {url} (after {offset} markets) is not a listing "
               f"({why}): {quoted!r}{more}")
    if _transient(body):
        raise TransientBody(message)
    raise FetchError(message, status=200)


def _transient(body: bytes) -> bool:
    """Whether an error answer says it is temporary: a 5xx or 429 status in it, or words
    such as `timeout`, `unavailable` or `rate limit`."""
    try:
        found = _ERROR_OBJECT.decode(body)
    except msgspec.DecodeError:
        return False
    for status in (found.status, found.code, found.status_code):
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        if isinstance(status, int) and (status == 429 or 500 <= status <= 599):
            return True
    text = body[:2048].decode("utf-8", "replace").lower()
    return any(word in text for word in _TRANSIENT_WORDS)

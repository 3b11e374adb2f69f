"""HTTP over httpx, hardened against what the network can send; pomabotd's only HTTP client
code.

Every fetch of every source goes through `get`, which owns the guards, so a new source gets them
by using it (and the daemon's notifications post through `post`, which keeps the deadline, the
failure words and the retries; it follows no redirect and reads no body):

- **Deadline.** Each attempt, from connecting to the last byte, must finish within
  `deadline_s`. A read timeout alone would let a server that sends one byte a second keep the
  connection alive forever; the whole attempt runs under `asyncio.timeout` instead. A deadline
  that fires is not retried: a server that slow will be as slow again.
- **Size.** A declared `Content-Length` above `max_bytes` is refused before the body is read.
  Otherwise the body is streamed and counted twice as it arrives: the bytes received and the
  bytes they decode to (`Content-Encoding`, undone a bounded step at a time by
  `pomabotd.sources.inflate`). The attempt is aborted as soon as either passes `max_bytes`, so
  memory stays near the cap whatever the server sends, a compression bomb included.
- **Redirects.** Followed here, not by httpx (which reads and decodes every redirect's body,
  uncapped): at most `MAX_REDIRECTS`, to http:// and https:// only, never back to a URL of the
  same chain. Each redirect's body is left unread.
- **Failures.** Every exception httpx can raise is mapped, in one table (`_HTTPX_FAILURES`), to
  words and to whether asking again can help. Connection errors, timeouts, a broken protocol,
  5xx and 429 are retried up to `retry_attempts` times with exponential backoff with full
  jitter (a 429's or 503's `Retry-After` is honoured; every wait is capped at
  `retry_max_wait_s`, 0 switching waiting off, as tests do). What will fail the same way again
  fails at once: a 4xx, a redirect loop or one to another scheme, a body that is not what its
  `Content-Encoding` says. A caller may also `check` a 200's body: raising `TransientBody` there
  (the server says it failed for now) is retried like a 5xx, raising `FetchError` fails at once,
  and anything else it raises (a decoder's `RecursionError` on JSON nested too deep) fails at
  once too, as a body that cannot be read.

Whatever happens, the caller gets a `FetchError` naming the URL (its secrets redacted) and
saying what went wrong, never a library's exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final, NamedTuple, TypeAlias, TypeVar

import httpx
import msgspec
import tenacity

from pomabotd._version import __version__
from pomabotd.errors import FetchError
from pomabotd.log import logger
from pomabotd.redact import redact_url
from pomabotd.sources.inflate import ACCEPT_ENCODING, BodyDecoder, DecodeFailed

__all__ = [
    "MAX_REDIRECTS",
    "USER_AGENT",
    "Fetched",
    "HttpLimits",
    "Params",
    "TransientBody",
    "get",
    "new_client",
    "post",
]

USER_AGENT: Final = f"pomabotd/{__version__} (+paper trading research)"
#: Redirects one attempt follows before it gives up.
MAX_REDIRECTS: Final = 10
_CONNECT_TIMEOUT_S: Final = 10.0
_BACKOFF_INITIAL_S: Final = 0.5
_FOLLOWED_SCHEMES: Final = frozenset({"http", "https"})

Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")
#: Query parameters: a mapping, or httpx's own when a name repeats (`id=1&id=2`).
Params: TypeAlias = Mapping[str, str | int | float] | httpx.QueryParams


class _Kind(NamedTuple):
    transient: bool
    words: str


#: Every exception httpx raises for a request (its `_exceptions.py` tree), most specific
#: first: whether asking again can help, and what it means in words. The last rows catch what
#: a later httpx adds under the same bases.
_HTTPX_FAILURES: Final[tuple[tuple[type[Exception], _Kind], ...]] = (
    (httpx.TooManyRedirects, _Kind(False, "too many redirects")),
    (httpx.UnsupportedProtocol, _Kind(False, "not an http:// or https:// URL")),
    (httpx.DecodingError, _Kind(False, "the body is not what its Content-Encoding says")),
    (httpx.LocalProtocolError, _Kind(False, "no valid HTTP request can be made for it")),
    (httpx.RemoteProtocolError, _Kind(True, "the server broke the HTTP protocol")),
    (httpx.ProxyError, _Kind(True, "the proxy failed")),
    (httpx.ConnectTimeout, _Kind(True, "no connection within the connect timeout")),
    (httpx.TimeoutException, _Kind(True, "timed out")),
    (httpx.ConnectError, _Kind(True, "cannot connect")),
    (httpx.NetworkError, _Kind(True, "the connection failed")),
    (httpx.TransportError, _Kind(True, "the transport failed")),
    (httpx.HTTPStatusError, _Kind(False, "an error status")),
    (httpx.InvalidURL, _Kind(False, "not a valid URL")),
    (httpx.HTTPError, _Kind(False, "the request failed")),
)
_HTTPX_ERRORS: Final = (httpx.HTTPError, httpx.InvalidURL)


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How long, how much and how often one GET may try."""

    deadline_s: float
    max_bytes: int
    retry_attempts: int
    retry_max_wait_s: float


class Fetched(msgspec.Struct, frozen=True, kw_only=True):
    """A finished response: 200 with its body, or 304 (not modified) without one."""

    status: int
    body: bytes
    etag: str | None = None
    last_modified: str | None = None


class _Failed(Exception):
    """One attempt's failure, in words: retried when `transient`; a 429's or 503's
    `Retry-After` (seconds) paces the next attempt."""

    def __init__(
        self, reason: str, *, transient: bool, status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


class _ErrorStatus(_Failed):
    """A 5xx or 429: the server answered that it cannot answer for now."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"answered HTTP {status}", transient=True, status=status,
                         retry_after=retry_after)


class TransientBody(Exception):
    """A 200 whose body says the server could not answer for now: retried like a 5xx. The
    message says what the body was."""


def new_client() -> httpx.AsyncClient:
    """One connection pool per source, kept across cycles. Redirects are followed by `get`,
    within its limits, not by httpx."""
    return httpx.AsyncClient(
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
        follow_redirects=False,
        timeout=httpx.Timeout(None, connect=_CONNECT_TIMEOUT_S),
    )


async def get(
    client: httpx.AsyncClient,
    url: str,
    limits: HttpLimits,
    *,
    params: Params | None = None,
    headers: Mapping[str, str] | None = None,
    what: str,
    sleep: Sleep = asyncio.sleep,
    check: Callable[[bytes], None] | None = None,
) -> Fetched:
    """GET `url` within `limits`; `what` names the request in logs and errors (`polymarket`).

    `check`, if given, judges a 200's body within the attempt: `TransientBody` retries it,
    `FetchError` fails at once. Raises FetchError, with the last HTTP status when there was one.
    """
    shown = redact_url(url)
    return await _retried(
        "GET", shown, what, limits, sleep,
        lambda: _attempt(client, url, shown, limits, params, headers, check),
    )


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    limits: HttpLimits,
    *,
    shown: str,
    what: str,
    headers: Mapping[str, str] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> int:
    """POST `body` to `url` within `limits` (`max_bytes` aside: the response's body is never
    read) and return its 2xx status; `shown` is the URL as messages may show it (a webhook's
    is a secret as a whole). A redirect is not followed: it fails, as any status but 2xx, a
    5xx or a 429 does at once. Raises FetchError."""
    return await _retried(
        "POST", shown, what, limits, sleep,
        lambda: _post_attempt(client, url, shown, body, headers, limits.deadline_s),
    )


async def _retried(
    method: str,
    shown: str,
    what: str,
    limits: HttpLimits,
    sleep: Sleep,
    attempt_once: Callable[[], Awaitable[_T]],
) -> _T:
    """`attempt_once` until it succeeds, fails for good, or `limits` allow no more attempts."""
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(limits.retry_attempts + 1),
        wait=_wait(limits.retry_max_wait_s),
        retry=tenacity.retry_if_exception(_transient),
        sleep=sleep,
        reraise=True,
        before_sleep=_log_retry(what, method, shown),
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts += 1
                return await attempt_once()
    except TransientBody as exc:
        raise FetchError(f"{what}: {exc} ({_times(attempts)})", status=200) from None
    except _ErrorStatus as exc:
        raise FetchError(f"{what}: {method} {shown} {exc} {_times(attempts)}",
                         status=exc.status) from None
    except _Failed as exc:
        again = "" if exc.transient else " (not retried: it would fail the same way)"
        raise FetchError(
            f"{what}: {method} {shown} failed {_times(attempts)}: {exc}{again}",
            status=exc.status,
        ) from None
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


async def _post_attempt(
    client: httpx.AsyncClient,
    url: str,
    shown: str,
    body: bytes,
    headers: Mapping[str, str] | None,
    deadline_s: float,
) -> int:
    try:
        async with asyncio.timeout(deadline_s):
            request = client.build_request("POST", url, content=body, headers=headers)
            response = await client.send(request, stream=True)
            await response.aclose()
    except TimeoutError:
        raise FetchError(
            f"POST {shown}: no response within the deadline of {deadline_s:g} s; aborted"
        ) from None
    except _HTTPX_ERRORS as exc:
        kind = _kind(exc)
        raise _Failed(f"{kind.words} ({_describe(exc)})", transient=kind.transient) from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise _ErrorStatus(status, _retry_after(response.headers.get("Retry-After")))
    if not 200 <= status < 300:
        raise _Failed(f"answered HTTP {status}", transient=False, status=status)
    return status


async def _attempt(
    client: httpx.AsyncClient,
    url: str,
    shown: str,
    limits: HttpLimits,
    params: Params | None,
    headers: Mapping[str, str] | None,
    check: Callable[[bytes], None] | None,
) -> Fetched:
    body = _Body(shown, limits.max_bytes)
    try:
        async with asyncio.timeout(limits.deadline_s):
            request = client.build_request("GET", url, params=params, headers=headers)
            response = await _follow(client, request, shown)
            try:
                return await _read(response, shown, limits, body, check)
            finally:
                await response.aclose()
    except TimeoutError:
        raise FetchError(
            f"GET {shown}: no complete response within the deadline of {limits.deadline_s:g} s "
            f"({body.received:,} bytes received); aborted"
        ) from None
    except _HTTPX_ERRORS as exc:
        kind = _kind(exc)
        raise _Failed(f"{kind.words} ({_describe(exc)})", transient=kind.transient) from None
    except DecodeFailed as exc:
        raise _Failed(f"the body cannot be decoded: {exc}", transient=False,
                      status=body.status) from None


async def _follow(
    client: httpx.AsyncClient, request: httpx.Request, shown: str
) -> httpx.Response:
    """The response at the end of `request`'s redirects, streaming and unread; a redirect's
    own body is never read."""
    seen = {str(request.url)}
    response = await client.send(request, stream=True)
    for _ in range(MAX_REDIRECTS):
        target = response.next_request
        if target is None:
            return response
        await response.aclose()
        location = redact_url(response.headers.get("Location", str(target.url)))
        if target.url.scheme not in _FOLLOWED_SCHEMES:
            raise _Failed(f"redirected to {location}, which is not an http:// or https:// URL",
                          transient=False, status=response.status_code)
        if str(target.url) in seen:
            raise _Failed(f"its redirects go round in a loop (back to {location})",
                          transient=False, status=response.status_code)
        seen.add(str(target.url))
        response = await client.send(target, stream=True)
    status = response.status_code
    await response.aclose()
    raise _Failed(f"more than {MAX_REDIRECTS} redirects", transient=False, status=status)


class _Body:
    """A body as it streams in: counted as received and as decoded, refused past the cap."""

    def __init__(self, shown: str, cap: int) -> None:
        self._shown = shown
        self._cap = cap
        self.received = 0
        self.status: int | None = None
        self.data = bytearray()

    def add_received(self, size: int) -> None:
        self.received += size
        if self.received > self._cap:
            raise self._over("received")

    def add_decoded(self, piece: bytes) -> None:
        self.data += piece
        if len(self.data) > self._cap:
            raise self._over(f"decoded from {self.received:,} bytes received")

    def _over(self, how: str) -> FetchError:
        return FetchError(
            f"GET {self._shown}: response passed the cap of {self._cap:,} bytes ({how}); "
            "aborted",
            status=self.status,
        )


async def _read(
    response: httpx.Response,
    shown: str,
    limits: HttpLimits,
    body: _Body,
    check: Callable[[bytes], None] | None,
) -> Fetched:
    status = body.status = response.status_code
    if status == 429 or status >= 500:
        raise _ErrorStatus(status, _retry_after(response.headers.get("Retry-After")))
    if status == 304:
        return _fetched(response, b"")
    if status != 200:
        raise FetchError(f"GET {shown} answered HTTP {status}", status=status)
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise FetchError(
            f"GET {shown}: response of {int(declared):,} bytes is over the cap of "
            f"{limits.max_bytes:,} bytes; not read",
            status=status,
        )
    decoder = BodyDecoder(response.headers.get_list("Content-Encoding", split_commas=True))
    async for chunk in response.aiter_raw():
        body.add_received(len(chunk))
        for piece in decoder.feed(chunk):
            body.add_decoded(piece)
    for piece in decoder.finish():
        body.add_decoded(piece)
    data = bytes(body.data)
    body.data.clear()
    if check is not None:
        try:
            check(data)
        except (FetchError, TransientBody):
            raise
        except Exception as exc:  # a decoder choking on hostile input: the body is unusable
            raise _Failed(f"its body cannot be read ({_describe(exc)})", transient=False,
                          status=status) from None
    return _fetched(response, data)


def _fetched(response: httpx.Response, body: bytes) -> Fetched:
    return Fetched(
        status=response.status_code,
        body=body,
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _wait(cap_s: float) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_random_exponential(multiplier=_BACKOFF_INITIAL_S, max=max(cap_s, 1e-9))

    def wait(state: tenacity.RetryCallState) -> float:
        if cap_s <= 0:
            return 0.0
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _Failed) and error.retry_after is not None:
            return min(error.retry_after, cap_s)
        return min(backoff(state), cap_s)

    return wait


def _log_retry(what: str, method: str, url: str) -> Callable[[tenacity.RetryCallState], None]:
    def log(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        reason = _describe(error) if error is not None else "unknown"
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.bind(event="fetch_retry", source=what, url=url,
                    attempt=state.attempt_number).warning(
            "{}: {} {} failed ({}); retrying in {:.2f} s", what, method, url, reason, wait
        )

    return log


def _transient(error: BaseException) -> bool:
    return isinstance(error, TransientBody) or (isinstance(error, _Failed) and error.transient)


def _kind(error: Exception) -> _Kind:
    return next(kind for cls, kind in _HTTPX_FAILURES if isinstance(error, cls))


def _describe(error: BaseException) -> str:
    if isinstance(error, _Failed | TransientBody):
        return str(error)
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _times(attempts: int) -> str:
    return "after 1 attempt" if attempts == 1 else f"after {attempts} attempts"

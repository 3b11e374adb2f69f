"""GET over httpx, hardened against what the network can send; the sources' only HTTP code.

Every response is bounded three ways:

- **Deadline.** Each attempt, from connecting to the last byte, must finish within
  `deadline_s`. A read timeout alone would let a server that sends one byte a second keep the
  connection alive forever; the whole attempt runs under `asyncio.timeout` instead. A deadline
  that fires is not retried: a server that slow will be as slow again.
- **Size.** A declared `Content-Length` above `max_bytes` is refused before the body is read;
  otherwise the body is streamed and the attempt aborted as soon as it passes `max_bytes`, so
  memory stays bounded whatever the server sends (compressed bodies are counted decoded).
- **Retries.** Connection errors, 5xx and 429 are retried up to `retry_attempts` times with
  exponential backoff with full jitter; a 429's or 503's `Retry-After` is honoured. Every wait is
  capped at `retry_max_wait_s` (0 switches waiting off, as tests do).

Anything else (4xx) fails at once. A caller may also `check` a 200's body: raising
`TransientBody` there (the server says it failed for now) is retried like a 5xx, raising
`FetchError` fails the request at once. Failures end as a `FetchError` saying what happened.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final, TypeAlias

import httpx
import msgspec
import tenacity

from pomabotd._version import __version__
from pomabotd.errors import FetchError
from pomabotd.log import logger

__all__ = ["USER_AGENT", "Fetched", "HttpLimits", "Params", "TransientBody", "get", "new_client"]

USER_AGENT: Final = f"pomabotd/{__version__} (+paper trading research)"
_CONNECT_TIMEOUT_S: Final = 10.0
_BACKOFF_INITIAL_S: Final = 0.5

Sleep = Callable[[float], Awaitable[None]]
#: Query parameters: a mapping, or httpx's own when a name repeats (`id=1&id=2`).
Params: TypeAlias = Mapping[str, str | int | float] | httpx.QueryParams


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


class _Retryable(Exception):
    """A response worth asking again for (5xx, 429), with the server's `Retry-After`."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class TransientBody(Exception):
    """A 200 whose body says the server could not answer for now: retried like a 5xx. The
    message says what the body was."""


def new_client() -> httpx.AsyncClient:
    """One connection pool per source, kept across cycles; redirects are followed."""
    return httpx.AsyncClient(
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        follow_redirects=True,
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
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(limits.retry_attempts + 1),
        wait=_wait(limits.retry_max_wait_s),
        retry=tenacity.retry_if_exception_type(
            (httpx.TransportError, _Retryable, TransientBody)
        ),
        sleep=sleep,
        reraise=True,
        before_sleep=_log_retry(what, url),
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts += 1
                return await _attempt(client, url, limits, params, headers, check)
    except TransientBody as exc:
        raise FetchError(f"{what}: {exc} ({_times(attempts)})", status=200) from None
    except _Retryable as exc:
        raise FetchError(
            f"{what}: GET {url} answered HTTP {exc.status} {_times(attempts)}", status=exc.status
        ) from None
    except httpx.TransportError as exc:
        raise FetchError(
            f"{what}: GET {url} failed {_times(attempts)}: {_describe(exc)}"
        ) from None
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


async def _attempt(
    client: httpx.AsyncClient,
    url: str,
    limits: HttpLimits,
    params: Params | None,
    headers: Mapping[str, str] | None,
    check: Callable[[bytes], None] | None,
) -> Fetched:
    received = 0
    try:
        async with (
            asyncio.timeout(limits.deadline_s),
            client.stream("GET", url, params=params, headers=headers) as response,
        ):
            status = response.status_code
            if status == 429 or status >= 500:
                raise _Retryable(status, _retry_after(response.headers.get("Retry-After")))
            if status == 304:
                return _fetched(response, b"")
            if status != 200:
                raise FetchError(f"GET {url} answered HTTP {status}", status=status)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise FetchError(
                    f"GET {url}: response of {int(declared):,} bytes is over the cap of "
                    f"{limits.max_bytes:,} bytes; not read",
                    status=status,
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                received = len(body)
                if received > limits.max_bytes:
                    raise FetchError(
                        f"GET {url}: response passed the cap of {limits.max_bytes:,} bytes; "
                        "aborted",
                        status=status,
                    )
            data = bytes(body)
            if check is not None:
                check(data)
            return _fetched(response, data)
    except TimeoutError:
        raise FetchError(
            f"GET {url}: no complete response within the deadline of {limits.deadline_s:g} s "
            f"({received:,} bytes received); aborted"
        ) from None


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
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return min(error.retry_after, cap_s)
        return min(backoff(state), cap_s)

    return wait


def _log_retry(what: str, url: str) -> Callable[[tenacity.RetryCallState], None]:
    def log(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        reason = _describe(error) if error is not None else "unknown"
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.bind(event="fetch_retry", source=what, url=url,
                    attempt=state.attempt_number).warning(
            "{}: GET {} failed ({}); retrying in {:.2f} s", what, url, reason, wait
        )

    return log


def _describe(error: BaseException) -> str:
    if isinstance(error, _Retryable | TransientBody):
        return str(error)
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _times(attempts: int) -> str:
    return "after 1 attempt" if attempts == 1 else f"after {attempts} attempts"

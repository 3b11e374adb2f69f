"""News feeds over real loopback HTTP and from files: guard, cache, de-duplication, failures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pomabotd.domain.models import Signal
from pomabotd.errors import ConfigError, SourceError
from pomabotd.sources import feeds
from pomabotd.sources.base import FetchContext, SourceBatch
from pomabotd.sources.feeds import FeedsSource

from .support import CAPTURES, RSS, drip, limits

AS_OF = datetime(2026, 10, 1, tzinfo=UTC)
MARKETS = (
    b'{"id":"fed","question":"Will the Federal Reserve end the enforcement action against '
    b'SNB Bancshares?","price":40,"liquidity":5000}\n'
    b'{"id":"xi","question":"Will Trump and Xi reach a trade deal at the state dinner?",'
    b'"price":30,"liquidity":5000}\n'
    b'{"id":"sec","question":"Will the SEC adopt the proposed regulation of crypto assets?",'
    b'"price":50,"liquidity":5000}\n'
)


def _xml(path: Path, **headers: str) -> Response:
    return Response(path.read_bytes(), content_type="application/rss+xml", headers=headers)


def _source(feeds: list[str], clock: Callable[[], float] | None = None, **options) -> FeedsSource:
    extra = {"clock": clock} if clock is not None else {}
    return FeedsSource(tuple(feeds), limits=limits(), **options, **extra)


def _cycles(source: FeedsSource, count: int = 1) -> list[SourceBatch]:
    async def run() -> list[SourceBatch]:
        try:
            return [await source.fetch(FetchContext(as_of=AS_OF, markets=MARKETS))
                    for _ in range(count)]
        finally:
            await source.aclose()

    return asyncio.run(run())


def _signals(batch: SourceBatch) -> list[Signal]:
    return [msgspec.json.decode(line, type=Signal) for line in batch.signals.splitlines()]


def _serve_captures(httpserver: HTTPServer) -> list[str]:
    urls = []
    for path in CAPTURES:
        httpserver.expect_request(f"/{path.name}").respond_with_handler(
            lambda request, path=path: _xml(path)
        )
        urls.append(httpserver.url_for(f"/{path.name}"))
    return urls


def test_three_recorded_feeds_over_http_become_signals(httpserver: HTTPServer):
    """BBC, Fed and SEC captures parse; items matching a market become typed signals."""
    batch = _cycles(_source(_serve_captures(httpserver)))[0]
    assert (batch.stats.feeds_ok, batch.stats.feeds_failed, batch.stats.news_items) == (3, 0, 11)
    signals = _signals(batch)
    by_market: dict[str, list[Signal]] = {}
    for signal in signals:
        by_market.setdefault(signal.market_id, []).append(signal)
    assert set(by_market) == {"fed", "xi", "sec"}
    fed = by_market["fed"][0]
    assert fed.source == "FRB: Press Release - All Releases"
    assert fed.type == "authoritative" and fed.strength >= 3
    assert fed.timestamp == datetime(2026, 9, 18, 15, tzinfo=UTC)
    assert fed.description.startswith("Federal Reserve Board announces termination")
    xi = [s for s in by_market["xi"] if s.description.startswith("Trump and Xi exchange")]
    assert xi and xi[0].source == "BBC News" and xi[0].strength <= 3
    assert batch.stats.news_signals == len(signals)


def test_conditional_requests_reuse_the_cache_on_304(httpserver: HTTPServer):
    """The second read sends If-None-Match and If-Modified-Since; a 304 keeps the old items."""
    path = CAPTURES[1]
    stamp = "Fri, 18 Sep 2026 15:00:00 GMT"

    def handler(request: Request) -> Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304)
        return _xml(path, ETag='"v1"', **{"Last-Modified": stamp})

    httpserver.expect_request("/fed.xml").respond_with_handler(handler)
    first, second = _cycles(_source([httpserver.url_for("/fed.xml")], min_interval_s=0.0), 2)
    request = httpserver.log[1][0]
    assert request.headers["If-None-Match"] == '"v1"'
    assert request.headers["If-Modified-Since"] == stamp
    assert second.stats.feeds_unchanged == 1 and second.stats.news_items == 0
    assert second.signals == first.signals and first.signals


def test_a_feed_is_not_read_again_within_its_minimum_interval(httpserver: HTTPServer):
    """Within feed_min_interval_s no request is made; after it, the feed is read again."""
    httpserver.expect_request("/fed.xml").respond_with_handler(lambda r: _xml(CAPTURES[1]))
    now = [100.0]
    source = _source([httpserver.url_for("/fed.xml")], clock=lambda: now[0],
                     min_interval_s=300.0)

    async def run() -> list[SourceBatch]:
        batches = []
        try:
            for step in (0.0, 299.0, 2.0):
                now[0] += step
                batches.append(await source.fetch(FetchContext(as_of=AS_OF, markets=MARKETS)))
        finally:
            await source.aclose()
        return batches

    batches = asyncio.run(run())
    assert len(httpserver.log) == 2
    assert [b.stats.feeds_unchanged for b in batches] == [0, 1, 0]
    assert [b.stats.news_items for b in batches] == [3, 0, 0]
    assert batches[2].stats.news_duplicates == 3


def test_items_are_deduplicated_across_feeds_and_cycles(tmp_path: Path):
    """The same items through two feeds and two cycles count once and signal once."""
    copy = tmp_path / "sec-copy.rss"
    copy.write_bytes(CAPTURES[2].read_bytes())
    first, second = _cycles(_source([str(CAPTURES[2]), str(copy)], min_interval_s=0.0), 2)
    assert (first.stats.news_items, first.stats.news_duplicates) == (3, 3)
    assert (second.stats.news_items, second.stats.news_duplicates) == (0, 6)
    assert second.signals == first.signals
    descriptions = [s.description for s in _signals(first)]
    assert len(descriptions) == len(set(descriptions))


def test_memory_of_items_is_bounded():
    """news_memory caps what is remembered: the oldest items are forgotten first."""
    batch = _cycles(_source([str(p) for p in CAPTURES], memory=4))[0]
    assert batch.stats.news_items == 11
    everything = _cycles(_source([str(p) for p in CAPTURES]))[0]
    assert "BBC News" in {s.source for s in _signals(everything)}
    assert {s.source for s in _signals(batch)} == {"FRB: Press Release - All Releases",
                                                   "Press Releases"}
    assert len(_signals(batch)) < len(_signals(everything))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("entity_bomb.xml", "refused unsafe XML (EntitiesForbidden"),
        ("external_entity.xml", "refused unsafe XML (EntitiesForbidden"),
        ("malformed.xml", "malformed XML"),
    ],
)
def test_hostile_or_broken_feed_is_refused_and_the_others_still_run(
    httpserver: HTTPServer, log_lines: list[str], name: str, reason: str
):
    """A bomb, an external entity or broken XML is refused, logged by name; good feeds run."""
    httpserver.expect_request(f"/{name}").respond_with_handler(lambda r: _xml(RSS / name))
    httpserver.expect_request("/fed.xml").respond_with_handler(lambda r: _xml(CAPTURES[1]))
    url = httpserver.url_for(f"/{name}")
    batch = _cycles(_source([url, httpserver.url_for("/fed.xml")]))[0]
    assert (batch.stats.feeds_ok, batch.stats.feeds_failed) == (1, 1)
    assert batch.stats.fetch_errors == {url: 1}
    assert {s.market_id for s in _signals(batch)} == {"fed"}
    failures = [line for line in log_lines if line.startswith("WARNING") and url in line]
    assert len(failures) == 1 and reason in failures[0]


def test_every_feed_failing_with_nothing_remembered_fails_the_cycle(tmp_path: Path):
    """No feed readable and no earlier items: a SourceError says so, quotes the first failure
    and carries the failures' counts for the cycle's metrics."""
    with pytest.raises(SourceError, match=r"every feed failed \(2 feeds\)") as raised:
        _cycles(_source([str(RSS / "malformed.xml"), str(tmp_path / "missing.xml")]))
    assert "malformed XML" in str(raised.value)
    assert raised.value.stats is not None and raised.value.stats.feeds_failed == 2
    assert sum(raised.value.stats.fetch_errors.values()) == 2


def test_a_failing_feed_keeps_the_items_read_before(httpserver: HTTPServer):
    """A feed that breaks in a later cycle: its earlier items keep giving signals."""
    answers = iter([_xml(CAPTURES[1])])
    httpserver.expect_request("/fed.xml").respond_with_handler(
        lambda r: next(answers, None) or Response("gone", status=404)
    )
    first, second = _cycles(_source([httpserver.url_for("/fed.xml")], min_interval_s=0.0), 2)
    assert second.stats.feeds_failed == 1
    assert second.signals == first.signals and first.signals


def test_feed_size_cap_and_deadline(raw_server, tmp_path: Path, httpserver: HTTPServer):
    """A feed over feed_max_kb (file or HTTP) and a dripping server are refused within bounds."""
    big = tmp_path / "big.xml"
    big.write_bytes(b"<rss>" + b" " * 5000 + b"</rss>")
    httpserver.expect_request("/big.xml").respond_with_data(big.read_bytes())
    slow = raw_server(drip)
    source = FeedsSource((str(big), httpserver.url_for("/big.xml"), slow.url, str(CAPTURES[1])),
                         limits=limits(max_bytes=4096, deadline_s=1.0))
    batch = _cycles(source)[0]
    assert (batch.stats.feeds_ok, batch.stats.feeds_failed) == (1, 3)
    assert set(batch.stats.fetch_errors) == {str(big), httpserver.url_for("/big.xml"), slow.url}


def test_feeds_that_redirect_forever_or_lie_about_gzip_fail_alone(
    httpserver: HTTPServer, log_lines: list[str]
):
    """A redirect loop, a redirect to file:// and a body that is not the gzip it claims each
    fail once (not retried), are counted and logged by URL; the good feed still runs."""
    httpserver.expect_request("/loop.xml").respond_with_response(
        Response(status=302, headers={"Location": "/loop.xml"}))
    httpserver.expect_request("/local.xml").respond_with_response(
        Response(status=302, headers={"Location": "file:///etc/passwd"}))
    httpserver.expect_request("/gzip.xml").respond_with_response(
        Response(CAPTURES[1].read_bytes(), headers={"Content-Encoding": "gzip"}))
    httpserver.expect_request("/fed.xml").respond_with_handler(lambda r: _xml(CAPTURES[1]))
    bad = [httpserver.url_for(f"/{name}.xml") for name in ("loop", "local", "gzip")]
    batch = _cycles(_source([*bad, httpserver.url_for("/fed.xml")]))[0]
    assert (batch.stats.feeds_ok, batch.stats.feeds_failed) == (1, 3)
    assert batch.stats.fetch_errors == dict.fromkeys(bad, 1)
    assert {s.market_id for s in _signals(batch)} == {"fed"}
    paths = [request.path for request, _ in httpserver.log]
    assert sorted(paths) == ["/fed.xml", "/gzip.xml", "/local.xml", "/loop.xml"]
    for url, reason in zip(bad, ("loop", "file:///etc/passwd", "not valid gzip"), strict=True):
        failed = [line for line in log_lines if line.startswith("WARNING") and url in line]
        assert len(failed) == 1 and reason in failed[0], failed
    assert not any("retrying" in line for line in log_lines)


def _cycles_within(source: FeedsSource, seconds: float, unblock: Path) -> list[SourceBatch]:
    """`_cycles`, failing if they do not end within `seconds` (the event loop blocked); a
    reader stuck on the FIFO `unblock` is released afterwards."""
    done: list[list[SourceBatch]] = []
    worker = threading.Thread(target=lambda: done.append(_cycles(source)), daemon=True)
    worker.start()
    worker.join(seconds)
    try:
        assert done, f"the feeds were not read within {seconds} s"
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
    return done[0]


def test_a_local_feed_that_is_a_fifo_is_refused_without_waiting(
    tmp_path: Path, log_lines: list[str]
):
    """A feed path that is a FIFO nobody writes to fails at once, saying what it is; the
    other feeds run."""
    fifo = tmp_path / "feed.xml"
    os.mkfifo(fifo)
    batch = _cycles_within(_source([str(fifo), str(CAPTURES[1])]), 10.0, fifo)[0]
    assert (batch.stats.feeds_ok, batch.stats.feeds_failed) == (1, 1)
    assert batch.stats.fetch_errors == {str(fifo): 1}
    assert any(str(fifo) in line and "is a FIFO (named pipe), not a regular file" in line
               for line in log_lines)


def test_a_local_feed_read_that_hangs_is_abandoned_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
):
    """A read that never returns (a network mount that stopped answering) fails that feed at
    the fetch deadline, off the event loop; the other feeds run."""
    release = threading.Event()
    real_read = feeds.read_regular

    def read(path: Path, max_bytes: int | None = None) -> bytes:
        if path.name == "hung.xml":
            release.wait(30)
        return real_read(path, max_bytes)

    monkeypatch.setattr(feeds, "read_regular", read)
    hung = tmp_path / "hung.xml"
    hung.write_bytes(CAPTURES[1].read_bytes())
    source = FeedsSource((str(hung), str(CAPTURES[0])), limits=limits(deadline_s=0.5))
    started = time.monotonic()
    try:
        batch = _cycles(source)[0]
    finally:
        release.set()
    assert time.monotonic() - started < 5.0
    assert (batch.stats.feeds_ok, batch.stats.feeds_failed) == (1, 1)
    assert any("not read within the deadline of 0.5 s" in line for line in log_lines)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("file:///var/feeds/fed.xml",
         "a local feed is written as its plain path: '/var/feeds/fed.xml'"),
        ("ftp://example.org/feed.xml", "is neither an http:// or https:// URL nor a file path"),
    ],
)
def test_a_feed_url_of_another_scheme_is_refused_saying_what_to_write(spec: str, message: str):
    """A file:// feed is refused with the plain path to write instead; ftp:// is refused."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        _source([spec])

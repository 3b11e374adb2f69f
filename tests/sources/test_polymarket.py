"""The Polymarket source against real HTTP servers on 127.0.0.1 serving recorded Gamma objects."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pomabotd.errors import InputError, SourceError
from pomabotd.sources.base import FetchContext, SourceBatch
from pomabotd.sources.gamma import GammaFile, map_market
from pomabotd.sources.polymarket import PolymarketSource
from pomabotd.wire import decode_markets

from .support import GAMMA_SAMPLE, RawServer, drip, gamma_objects, limits

AS_OF = datetime(2026, 2, 7, 12, tzinfo=UTC)
OPEN_IDS = [o["id"] for o in gamma_objects()]


def _fetch(source: PolymarketSource) -> SourceBatch:
    async def run() -> SourceBatch:
        try:
            return await source.fetch(FetchContext(as_of=AS_OF))
        finally:
            await source.aclose()

    return asyncio.run(run())


def _ids(batch: SourceBatch) -> list[str]:
    markets, rejected = decode_markets(batch.markets, "test")
    assert rejected == []
    return [m.id for m in markets]


def _json(body: object, status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json",
                    headers=headers)


def _keyset(objects: list[dict], page: int = 20) -> Callable[[Request], Response]:
    """A keyset endpoint: the cursor is the next offset, absent on the last page."""

    def handler(request: Request) -> Response:
        start = int(request.args.get("after_cursor", "0"))
        limit = min(int(request.args["limit"]), page)
        chunk = objects[start : start + limit]
        body: dict = {"markets": chunk}
        if start + limit < len(objects):
            body["next_cursor"] = str(start + limit)
        return _json(body)

    return handler


def test_keyset_paging_fetches_every_market_with_server_side_filters(httpserver: HTTPServer):
    """Keyset pages are followed by next_cursor to the end; closed/active/liquidity filters sent."""
    httpserver.expect_request("/markets/keyset").respond_with_handler(_keyset(gamma_objects()))
    source = PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20,
                              min_liquidity=500.0)
    batch = _fetch(source)
    assert _ids(batch) == OPEN_IDS
    args = [request.args for request, _ in httpserver.log]
    assert [a.get("after_cursor") for a in args] == [None, "20", "40"]
    assert all(a["closed"] == "false" and a["active"] == "true" for a in args)
    assert all(a["liquidity_num_min"] == "500.0" and a["limit"] == "20" for a in args)
    assert batch.stats.fetch_errors == {} and batch.rejected == ()


def test_offset_paging_is_the_fallback_when_keyset_is_not_offered(httpserver: HTTPServer):
    """A 404 on /markets/keyset switches to /markets?offset=, for this and later cycles."""
    objects = gamma_objects()
    httpserver.expect_request("/markets/keyset").respond_with_data("not here", status=404)

    def offset(request: Request) -> Response:
        start, limit = int(request.args["offset"]), int(request.args["limit"])
        return _json(objects[start : start + limit])

    httpserver.expect_request("/markets").respond_with_handler(offset)
    source = PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20)

    async def two_cycles() -> tuple[SourceBatch, SourceBatch]:
        try:
            first = await source.fetch(FetchContext(as_of=AS_OF))
            second = await source.fetch(FetchContext(as_of=AS_OF))
            return first, second
        finally:
            await source.aclose()

    first, second = asyncio.run(two_cycles())
    assert _ids(first) == OPEN_IDS and _ids(second) == OPEN_IDS
    paths = [(request.path, request.args.get("offset")) for request, _ in httpserver.log]
    assert paths == [("/markets/keyset", None), ("/markets", "0"), ("/markets", "20"),
                     ("/markets", "40"), ("/markets", "0"), ("/markets", "20"),
                     ("/markets", "40")]


def test_429_is_retried_after_the_servers_retry_after(httpserver: HTTPServer):
    """A 429 with Retry-After: 2 waits those 2 seconds (under the cap) and then succeeds."""
    answers = iter([_json({"error": "slow down"}, 429, **{"Retry-After": "2"})])

    def handler(request: Request) -> Response:
        return next(answers, None) or _keyset(gamma_objects(), page=100)(request)

    httpserver.expect_request("/markets/keyset").respond_with_handler(handler)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    source = PolymarketSource(httpserver.url_for(""), limits=limits(retry_max_wait_s=10.0),
                              sleep=sleep)
    assert _ids(_fetch(source)) == OPEN_IDS
    assert waits == [2.0]
    assert len(httpserver.log) == 2


def test_retry_after_is_capped_by_the_longest_wait(httpserver: HTTPServer):
    """A server asking for an hour is only waited on for retry_max_wait_s."""
    answers = iter([_json({}, 503, **{"Retry-After": "3600"})])
    httpserver.expect_request("/markets/keyset").respond_with_handler(
        lambda request: next(answers, None) or _keyset(gamma_objects(), 100)(request)
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    source = PolymarketSource(httpserver.url_for(""), limits=limits(retry_max_wait_s=1.5),
                              sleep=sleep)
    assert _ids(_fetch(source)) == OPEN_IDS
    assert waits == [1.5]


def test_500_then_success_is_retried_with_jittered_backoff(httpserver: HTTPServer, log_lines):
    """Two 500s are retried (backoff within the cap, logged), the third answer is used."""
    answers = iter([_json({}, 500), _json({}, 502)])
    httpserver.expect_request("/markets/keyset").respond_with_handler(
        lambda request: next(answers, None) or _keyset(gamma_objects(), 100)(request)
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    source = PolymarketSource(httpserver.url_for(""), limits=limits(retry_max_wait_s=8.0),
                              sleep=sleep)
    assert _ids(_fetch(source)) == OPEN_IDS
    assert len(waits) == 2 and all(0 <= w <= 8.0 for w in waits)
    assert sum("HTTP 500" in line and "retrying" in line for line in log_lines) == 1


def test_server_error_on_a_later_page_keeps_the_pages_already_fetched(
    httpserver: HTTPServer, log_lines
):
    """Page 2 failing after every retry: page 1's markets still run; the failure is counted."""
    objects = gamma_objects()

    def handler(request: Request) -> Response:
        if request.args.get("after_cursor"):
            return _json({}, 503)
        return _json({"markets": objects[:20], "next_cursor": "20"})

    httpserver.expect_request("/markets/keyset").respond_with_handler(handler)
    batch = _fetch(PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20))
    assert _ids(batch) == OPEN_IDS[:20]
    assert batch.stats.fetch_errors == {"polymarket": 1}
    assert any("paging stopped after 20 markets" in line and "HTTP 503" in line
               for line in log_lines)


def test_unreachable_server_fails_the_cycle_after_retries():
    """Connection refused on every attempt: SourceError naming the source and the cause."""
    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    source = PolymarketSource(f"http://127.0.0.1:{port}", limits=limits(retry_attempts=2))
    with pytest.raises(SourceError, match=r"polymarket: no markets fetched.*after 3 attempts") \
            as raised:
        _fetch(source)
    assert raised.value.stats is not None
    assert raised.value.stats.fetch_errors == {"polymarket": 1}


def test_truncated_body_is_retried_then_the_good_answer_used(raw_server):
    """A body cut short of its Content-Length is a transport error: retried, then accepted."""
    body = json.dumps({"markets": gamma_objects()}).encode()

    def script(conn: socket.socket, server: RawServer) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " \
               f"{len(body)}\r\nConnection: close\r\n\r\n".encode()
        cut = len(body) // 3 if server.connections == 1 else len(body)
        server.send(conn, head + body[:cut])

    server = raw_server(script)
    batch = _fetch(PolymarketSource(server.url, limits=limits()))
    assert _ids(batch) == OPEN_IDS
    assert server.connections == 2


def test_truncated_json_page_is_refused_and_counted(httpserver: HTTPServer, log_lines):
    """A page whose JSON stops mid-object (no length to check) fails decoding, named and counted."""
    objects = gamma_objects()
    text = json.dumps({"markets": objects[20:40]})

    def handler(request: Request) -> Response:
        if request.args.get("after_cursor"):
            return Response(text[: len(text) // 2], content_type="application/json")
        return _json({"markets": objects[:20], "next_cursor": "20"})

    httpserver.expect_request("/markets/keyset").respond_with_handler(handler)
    batch = _fetch(PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20))
    assert _ids(batch) == OPEN_IDS[:20]
    assert batch.stats.fetch_errors == {"polymarket": 1}
    assert any("page 2 of" in line and "is not a listing" in line for line in log_lines)


@pytest.mark.parametrize("body", [{"error": "invalid filter"}, {"data": []}])
def test_a_first_page_that_is_not_a_listing_fails_quoting_it(httpserver: HTTPServer, body):
    """A 200 carrying an error object, or an object without `markets`, is not an empty
    listing: the fetch fails at once, naming the page and quoting the body's start."""
    httpserver.expect_request("/markets/keyset").respond_with_json(body)
    source = PolymarketSource(httpserver.url_for(""), limits=limits(retry_attempts=2))
    with pytest.raises(SourceError) as raised:
        _fetch(source)
    message = str(raised.value)
    assert "page 1 of" in message and "is not a listing" in message
    assert f'"{next(iter(body))}"' in message and "listed none" not in message
    assert len(httpserver.log) == 1  # not transient: not asked again


def test_an_error_page_saying_it_is_temporary_is_asked_again(httpserver: HTTPServer):
    """Page 2 answers 200 with `{"error": "... temporarily unavailable"}` once: it is
    retried like a 5xx and every market arrives."""
    objects = gamma_objects()
    answers = iter([_json({"error": "service temporarily unavailable"})])

    def handler(request: Request) -> Response:
        if request.args.get("after_cursor"):
            return next(answers, None) or _json({"markets": objects[20:], "next_cursor": None})
        return _json({"markets": objects[:20], "next_cursor": "20"})

    httpserver.expect_request("/markets/keyset").respond_with_handler(handler)
    batch = _fetch(PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20))
    assert _ids(batch) == OPEN_IDS
    assert batch.stats.fetch_errors == {}
    assert len(httpserver.log) == 3


def test_bad_prices_and_outcomes_are_refused_by_record_and_field(httpserver: HTTPServer):
    """NaN, out-of-range and missing prices and a three-way market are refused; the rest run."""
    objects = gamma_objects()
    broken = {
        objects[0]["id"]: {"outcomePrices": '["NaN", "NaN"]'},
        objects[1]["id"]: {"outcomePrices": '["1.5", "-0.5"]'},
        objects[2]["id"]: {"outcomePrices": None},
        objects[3]["id"]: {"outcomes": '["A", "B", "C"]', "outcomePrices": '["0.2","0.3","0.5"]'},
        objects[4]["id"]: {"outcomePrices": '["Infinity", "0"]'},
        objects[5]["id"]: {"liquidityNum": -5},
    }
    for obj in objects:
        obj.update(broken.get(obj["id"], {}))
    httpserver.expect_request("/markets/keyset").respond_with_json({"markets": objects})
    batch = _fetch(PolymarketSource(httpserver.url_for(""), limits=limits()))
    assert _ids(batch) == OPEN_IDS[6:]
    refused = {r.record: (r.field, r.message) for r in batch.rejected}
    assert set(refused) == set(broken)
    assert refused[objects[0]["id"]] == ("outcomePrices", "price 'NaN' is not a finite number")
    assert refused[objects[1]["id"]] == ("outcomePrices", "price '1.5' is outside 0-1")
    assert refused[objects[2]["id"]][0] == "outcomePrices"
    assert refused[objects[3]["id"]][0] == "outcomes"
    assert refused[objects[4]["id"]][0] == "outcomePrices"
    assert refused[objects[5]["id"]][0] == "liquidityNum"
    assert batch.stats.records_refused == 6
    assert str(batch.rejected[0]) == (
        f"polymarket record 1 (id {objects[0]['id']}): outcomePrices: "
        "price 'NaN' is not a finite number"
    )


def test_every_record_refused_fails_the_cycle(httpserver: HTTPServer):
    """Nothing usable at all is a SourceError saying every record was refused."""
    objects = [dict(o, outcomePrices='["nope", "0"]') for o in gamma_objects()[:5]]
    httpserver.expect_request("/markets/keyset").respond_with_json({"markets": objects})
    with pytest.raises(SourceError, match=r"every record refused \(5 records; first: "):
        _fetch(PolymarketSource(httpserver.url_for(""), limits=limits()))


def test_huge_body_is_aborted_at_the_cap_with_memory_bounded(httpserver: HTTPServer):
    """A 100 MB chunked body stops at a 1 MB cap: little is sent, little memory is used."""
    produced = [0]
    block = b" " * 65536

    def body():
        yield b'{"markets": ['
        for _ in range(100 * 16):  # 100 MB of padding
            produced[0] += len(block)
            yield block
        yield b"]}"

    httpserver.expect_request("/markets/keyset").respond_with_handler(
        lambda request: Response(body(), content_type="application/json")
    )
    source = PolymarketSource(httpserver.url_for(""), limits=limits(max_bytes=1024 * 1024))
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match="passed the cap of 1,048,576 bytes"):
            _fetch(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    assert produced[0] < 32 * 1024 * 1024


def test_declared_length_over_the_cap_is_not_read(httpserver: HTTPServer):
    """A Content-Length above the cap is refused before the body is read."""
    httpserver.expect_request("/markets/keyset").respond_with_data(
        b" " * 300_000, content_type="application/json"
    )
    source = PolymarketSource(httpserver.url_for(""), limits=limits(max_bytes=100_000))
    with pytest.raises(SourceError, match="300,000 bytes is over the cap"):
        _fetch(source)


def test_one_byte_a_second_server_is_cut_off_by_the_deadline(raw_server):
    """A server dripping a byte a second cannot outlive the deadline; it is not retried."""
    server = raw_server(drip)
    source = PolymarketSource(server.url, limits=limits(deadline_s=1.5))
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"deadline of 1\.5 s"):
        _fetch(source)
    assert time.monotonic() - started < 5.0
    assert server.connections == 1


def test_snapshot_round_trips_through_gamma_path(httpserver: HTTPServer, tmp_path: Path):
    """--save-snapshot writes the fetched objects; gamma:PATH reads the same markets back."""
    httpserver.expect_request("/markets/keyset").respond_with_handler(_keyset(gamma_objects()))
    snapshot = tmp_path / "snap.json"
    live = _fetch(PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20,
                                   snapshot=snapshot))
    saved = json.loads(snapshot.read_bytes())
    assert saved == gamma_objects()
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]
    offline = asyncio.run(GammaFile(snapshot).fetch(FetchContext(as_of=AS_OF)))
    assert offline.markets == live.markets


def test_map_market_follows_the_gamma_field_mapping():
    """Fields map as documented: first outcome plays YES, price x100, names kept, dates parsed."""
    by_id = {o["id"]: o for o in gamma_objects()}
    market = map_market(json.dumps(by_id["1343791"]).encode())
    assert not isinstance(market, type(None))
    assert (market.yes_outcome, market.no_outcome) == ("Team Falcons", "Xtreme Gaming")
    assert market.price == 67.0 and market.category == "sports"
    assert market.liquidity == 4449.9248 and market.volume_24h == 4673.046112999999
    assert market.closes_at == datetime(2026, 2, 7, 23, tzinfo=UTC)
    assert market.outcome is None and market.resolution_criteria
    over = map_market(json.dumps(by_id["979623"]).encode())
    assert over.yes_outcome == "Over" and over.price == 0.0 and over.outcome == "NO"
    resolved_yes = map_market(json.dumps(by_id["1237864"]).encode())
    assert resolved_yes.outcome == "YES" and resolved_yes.price == 100.0
    crypto = map_market(json.dumps(by_id["613101"]).encode())
    assert crypto.category == "crypto" and crypto.outcome == "NO"
    assert map_market(json.dumps(by_id["542608"]).encode()).category == "weather"
    assert map_market(json.dumps(by_id["242644"]).encode()).category == "sports"


def test_gamma_snapshot_of_the_recorded_sample_maps_every_record():
    """The 50 recorded objects, refused line by line as JSONL before, all map to markets."""
    batch = asyncio.run(GammaFile(GAMMA_SAMPLE).fetch(FetchContext(as_of=AS_OF)))
    markets, rejected = decode_markets(batch.markets, "test")
    assert len(markets) == 50 and rejected == [] and batch.rejected == ()
    assert sum(1 for m in markets if m.outcome is not None) == 24
    named = {m.id: (m.yes_outcome, m.no_outcome) for m in markets if m.yes_outcome}
    assert named["1240343"] == ("Up", "Down") and "613101" not in named
    assert len(named) == 50 - sum(1 for o in gamma_objects() if o["outcomes"] == '["Yes", "No"]')
    line = next(line for line in batch.markets.splitlines() if b'"613101"' in line)
    assert b"yes_outcome" not in line


def test_unwritable_snapshot_path_is_an_input_error(httpserver: HTTPServer, tmp_path: Path):
    """A snapshot that cannot be written names the key and the path instead of a traceback."""
    httpserver.expect_request("/markets/keyset").respond_with_json({"markets": gamma_objects()})
    source = PolymarketSource(httpserver.url_for(""), limits=limits(),
                              snapshot=tmp_path / "no-such-dir" / "snap.json")
    with pytest.raises(InputError, match=r"sources\.save_snapshot .*snap\.json: cannot be written"):
        _fetch(source)


def test_questions_give_the_category_where_gamma_gives_none():
    """The recorded objects carry no category and no tags: the questions' words place them
    (elections and pardons in politics, OpenAI in technology, Israel in world), and only
    a question no listed word matches stays `other`."""
    by_question = {}
    for raw in gamma_objects():
        market = map_market(json.dumps(raw).encode())
        by_question[market.question] = market.category
    assert by_question["Will José Luna win the 2026 Peruvian presidential election?"] == (
        "politics")
    assert by_question['Will Trump pardon Joe Exotic "The Tiger King" in 2025?'] == "politics"
    assert by_question["Will OpenAI announce a head-mounted display in 2026?"] == "technology"
    assert by_question["Israel x Syria security agreement by June 30?"] == "world"
    assert by_question["Solana all time high by September 30, 2026?"] == "crypto"
    assert by_question["Will Taylor Swift perform during the Super Bowl LX halftime show?"] == (
        "entertainment")  # two entertainment words against one sports word
    assert list(by_question.values()).count("other") == 1


def test_a_page_sent_again_is_not_a_refusal(httpserver: HTTPServer, log_lines):
    """A server that answers the next cursor with the first page again (and the same cursor):
    paging stops, the repeated objects are kept once and none counts as refused."""
    objects = gamma_objects()
    httpserver.expect_request("/markets/keyset").respond_with_json(
        {"markets": objects[:20], "next_cursor": "20"})
    batch = _fetch(PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20))
    assert _ids(batch) == OPEN_IDS[:20]
    assert batch.rejected == () and batch.stats.records_refused == 0
    assert any("sent 20 market objects again" in line for line in log_lines)


def _by_id(objects: list[dict], extra: list[dict] | None = None) -> Callable[[Request], Response]:
    """`/markets?id=...`: the objects asked for that the server knows, plus `extra` ones (a
    server ignoring the filter), in one page."""
    known = {str(o["id"]): o for o in objects}

    def handler(request: Request) -> Response:
        asked = request.args.getlist("id")
        return _json([known[i] for i in asked if i in known] + (extra or []))

    return handler


def test_held_markets_missing_from_the_listing_are_fetched_by_id(httpserver: HTTPServer):
    """The listing has only open markets; the held markets it lacks are asked for by id in one
    request without the open-market filters: a closed one comes back resolved, an unknown one
    stays missing, and what the server adds unasked is left out."""
    objects = gamma_objects()
    open_ = [o for o in objects if not o["closed"]]
    httpserver.expect_request("/markets/keyset").respond_with_handler(_keyset(open_, page=100))
    httpserver.expect_request("/markets").respond_with_handler(_by_id(objects, [objects[0]]))
    source = PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=100)
    held = frozenset({"613101", "947275", "no-such-market"})  # closed NO, listed, unknown

    async def run() -> SourceBatch:
        try:
            return await source.fetch(FetchContext(as_of=AS_OF, held=held))
        finally:
            await source.aclose()

    batch = asyncio.run(run())
    markets, rejected = decode_markets(batch.markets, "test")
    assert rejected == [] and batch.stats.fetch_errors == {}
    by_id = {m.id: m for m in markets}
    assert len(markets) == len(open_) + 1 and objects[0]["id"] not in by_id
    assert by_id["613101"].outcome == "NO" and by_id["947275"].outcome is None
    requests = [request for request, _ in httpserver.log if request.path == "/markets"]
    assert len(requests) == 1
    assert requests[0].args.getlist("id") == ["613101", "no-such-market"]
    assert "closed" not in requests[0].args and "active" not in requests[0].args


def test_a_failed_fetch_of_held_markets_keeps_the_listing(httpserver: HTTPServer, log_lines):
    """When the by-id request fails after its retries, the open markets still run; the failure
    is counted and logged, and no held market is made up."""
    open_ = [o for o in gamma_objects() if not o["closed"]]
    httpserver.expect_request("/markets/keyset").respond_with_handler(_keyset(open_, page=100))
    httpserver.expect_request("/markets").respond_with_data("down", status=503)
    source = PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=100)

    async def run() -> SourceBatch:
        try:
            return await source.fetch(FetchContext(as_of=AS_OF, held=frozenset({"613101"})))
        finally:
            await source.aclose()

    batch = asyncio.run(run())
    assert len(_ids(batch)) == len(open_) and "613101" not in _ids(batch)
    assert batch.stats.fetch_errors == {"polymarket": 1}
    assert any("could not be fetched by id" in line for line in log_lines)


def test_json_nested_too_deep_on_page_2_keeps_page_1(httpserver: HTTPServer, log_lines):
    """Page 2 nested 100,000 arrays deep (a decoder's RecursionError): page 1's markets still
    run, the page is counted as a failed fetch, logged with its URL, and not asked again."""
    objects = gamma_objects()
    deep = '{"markets": [' + "[" * 100_000 + "]" * 100_000 + "]}"

    def handler(request: Request) -> Response:
        if request.args.get("after_cursor"):
            return Response(deep, content_type="application/json")
        return _json({"markets": objects[:20], "next_cursor": "20"})

    httpserver.expect_request("/markets/keyset").respond_with_handler(handler)
    batch = _fetch(PolymarketSource(httpserver.url_for(""), limits=limits(), page_size=20))
    assert _ids(batch) == OPEN_IDS[:20]
    assert batch.stats.fetch_errors == {"polymarket": 1}
    assert len(httpserver.log) == 2
    stopped = [line for line in log_lines if "paging stopped after 20 markets" in line]
    assert len(stopped) == 1
    assert "RecursionError" in stopped[0] and httpserver.url_for("/markets/keyset") in stopped[0]


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (Response(status=302, headers={"Location": "/markets/keyset"}), "go round in a loop"),
        (Response(status=307, headers={"Location": "file:///etc/passwd"}),
         "redirected to file:///etc/passwd"),
        (Response(b'{"markets": []}', headers={"Content-Encoding": "gzip"}),
         "not valid gzip data"),
    ],
    ids=["redirect-loop", "redirect-to-file", "bad-gzip"],
)
def test_a_market_api_that_loops_or_lies_fails_the_cycle_in_one_line(
    httpserver: HTTPServer, response: Response, reason: str
):
    """A redirect loop, a redirect to file:// or a body that is not its gzip: a SourceError
    naming the URL and the reason, counted, after one request (never an httpx traceback)."""
    httpserver.expect_request("/markets/keyset").respond_with_response(response)
    with pytest.raises(SourceError, match="polymarket: no markets fetched") as raised:
        _fetch(PolymarketSource(httpserver.url_for(""), limits=limits()))
    assert reason in str(raised.value)
    assert httpserver.url_for("/markets/keyset") in str(raised.value)
    assert raised.value.stats is not None
    assert raised.value.stats.fetch_errors == {"polymarket": 1}
    assert len(httpserver.log) <= 2  # one attempt: the page, and the loop's one hop back
    assert "after 1 attempt" in str(raised.value)

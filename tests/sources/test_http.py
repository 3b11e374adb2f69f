"""The one place every fetch goes through: httpx's every failure mapped, redirects and
Content-Encoding handled within the caps, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import zlib
from collections.abc import Callable

import httpx
import pytest

from pomabotd.errors import FetchError
from pomabotd.sources.http import Fetched, get, new_client

from .support import DATA, RawServer, limits

BOMB_512_MIB = DATA / "bombs" / "zeros_512mib.gz.gz"

#: httpx's failures that the same request may get over by asking again.
TRANSIENT = {
    httpx.TransportError, httpx.TimeoutException, httpx.ConnectTimeout, httpx.ReadTimeout,
    httpx.WriteTimeout, httpx.PoolTimeout, httpx.NetworkError, httpx.ConnectError,
    httpx.ReadError, httpx.WriteError, httpx.CloseError, httpx.ProxyError,
    httpx.ProtocolError, httpx.RemoteProtocolError,
}
#: Those it will not: a loop, a scheme pomabotd does not fetch, a body that lies.
PERMANENT = {
    httpx.HTTPError, httpx.RequestError, httpx.HTTPStatusError, httpx.TooManyRedirects,
    httpx.UnsupportedProtocol, httpx.DecodingError, httpx.LocalProtocolError, httpx.InvalidURL,
}


def _httpx_errors() -> list[type[Exception]]:
    found: list[type[Exception]] = [httpx.InvalidURL]
    pending: list[type[Exception]] = [httpx.HTTPError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending += cls.__subclasses__()
    return found


def _raising(cls: type[Exception]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if cls is httpx.HTTPStatusError:
            raise cls("boom", request=request, response=httpx.Response(500, request=request))
        if issubclass(cls, httpx.RequestError):
            raise cls("boom", request=request)
        raise cls("boom")

    return handler


def _get(url: str, client: httpx.AsyncClient | None = None, **changes: float) -> Fetched:
    async def run() -> Fetched:
        async with client or new_client() as session:
            return await get(session, url, limits(**changes), what="test")

    return asyncio.run(run())


def _serve(response: bytes) -> Callable[[socket.socket, RawServer], None]:
    def script(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, response)

    return script


def _response(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize("cls", _httpx_errors(), ids=lambda cls: cls.__name__)
def test_every_httpx_failure_is_a_fetch_error_naming_the_url(cls: type[Exception]) -> None:
    """Each exception of httpx's tree becomes a FetchError naming the URL; only those asking
    again can cure are retried."""
    assert cls in TRANSIENT | PERMANENT, f"{cls.__name__}: say whether it is transient"
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _raising(cls)(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with pytest.raises(FetchError, match=r"test: GET http://feeds\.test/x failed") as raised:
        _get("http://feeds.test/x", client)
    assert cls.__name__ in str(raised.value)
    assert len(calls) == (3 if cls in TRANSIENT else 1)


def test_a_redirect_loop_fails_at_once_naming_the_url(raw_server) -> None:
    """A server redirecting to itself forever: one attempt, a FetchError saying it loops."""
    server = raw_server(_serve(b"HTTP/1.1 302 Found\r\nLocation: /again\r\n"
                               b"Content-Length: 0\r\nConnection: close\r\n\r\n"))
    with pytest.raises(FetchError, match="redirects go round in a loop") as raised:
        _get(server.url + "/start")
    assert f"GET {server.url}/start" in str(raised.value)
    assert server.connections == 2  # /start, then /again once


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/feed.xml"])
def test_a_redirect_to_another_scheme_is_refused_without_following(raw_server, location) -> None:
    """A redirect to file:// or ftp:// is not followed and not retried."""
    server = raw_server(_serve(f"HTTP/1.1 301 Moved\r\nLocation: {location}\r\n"
                               "Content-Length: 0\r\n\r\n".encode()))
    with pytest.raises(FetchError, match=f"redirected to {location}, which is not an http"):
        _get(server.url)
    assert server.connections == 1


def test_a_body_that_is_not_the_gzip_it_claims_fails_at_once(raw_server) -> None:
    """`Content-Encoding: gzip` on plain text: a FetchError saying so, after one attempt."""
    server = raw_server(_serve(_response(b"<rss>plain</rss>", "Content-Encoding: gzip")))
    with pytest.raises(FetchError, match="cannot be decoded: not valid gzip data"):
        _get(server.url)
    assert server.connections == 1


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(b"<rss/>" * 50_000)),
        ("gzip, gzip", gzip.compress(gzip.compress(b"<rss/>" * 50_000))),
        ("deflate", zlib.compress(b"<rss/>" * 50_000)),
        ("deflate", zlib.compress(b"<rss/>" * 50_000)[2:-4]),  # raw deflate, as some send
        ("x-gzip", gzip.compress(b"<rss/>" * 25_000) + gzip.compress(b"<rss/>" * 25_000)),
        ("identity", b"<rss/>" * 50_000),
    ],
    ids=["gzip", "gzip-twice", "zlib", "raw-deflate", "two-members", "identity"],
)
def test_encoded_bodies_decode_to_what_was_sent(raw_server, encoding: str, body: bytes) -> None:
    """Every encoding pomabotd asks for decodes, in layers and in several gzip members."""
    server = raw_server(_serve(_response(body, f"Content-Encoding: {encoding}")))
    assert _get(server.url).body == b"<rss/>" * 50_000


def test_an_encoding_pomabotd_did_not_ask_for_is_refused(raw_server) -> None:
    """A `br` body (pomabotd asks for gzip or deflate) fails naming the encoding."""
    server = raw_server(_serve(_response(b"\x0b\x02\x80hello\x03", "Content-Encoding: br")))
    with pytest.raises(FetchError, match="Content-Encoding 'br' is not one pomabotd decodes"):
        _get(server.url)


_BOMB_CLIENT = """
import asyncio, json, sys
from pomabotd.errors import FetchError
from pomabotd.sources.http import HttpLimits, get, new_client

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

async def main():
    limits = HttpLimits(deadline_s=30, max_bytes=int(sys.argv[2]), retry_attempts=0,
                        retry_max_wait_s=0)
    async with new_client() as client:
        await get(client, sys.argv[1], limits, what="bomb")

before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak starts again from here, not from the imports' own peak
try:
    asyncio.run(main())
    error = None
except FetchError as exc:
    error = str(exc)
print(json.dumps({"error": error, "growth_kb": status("VmHWM") - before}))
"""


def test_a_gzip_bomb_stops_at_the_cap_with_peak_memory_near_it(raw_server) -> None:
    """980 bytes of `gzip, gzip` that inflate to 512 MiB stop at a 4 MiB cap; the fetching
    process's peak RSS (VmHWM, reset before the fetch) grows by less than 48 MiB."""
    server = raw_server(_serve(_response(BOMB_512_MIB.read_bytes(),
                                         "Content-Encoding: gzip, gzip")))
    result = subprocess.run(
        [sys.executable, "-c", _BOMB_CLIENT, server.url, str(4 * 1024 * 1024)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    outcome = json.loads(result.stdout)
    assert outcome["growth_kb"] < 48 * 1024
    assert outcome["error"] is not None and "passed the cap of 4,194,304 bytes" in outcome["error"]
    assert "decoded from 980 bytes received" in outcome["error"]


def test_the_received_bytes_count_against_the_cap_too(raw_server) -> None:
    """A compressed body larger than the cap is refused while it streams, undeclared."""

    def chunked(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
        noise = gzip.compress(bytes(range(256)) * 4096, compresslevel=0)
        for start in range(0, len(noise), 65536):
            piece = noise[start : start + 65536]
            if not server.send(conn, f"{len(piece):x}\r\n".encode() + piece + b"\r\n"):
                return

    server = raw_server(chunked)
    with pytest.raises(FetchError, match=r"passed the cap of 100,000 bytes \(received\)"):
        _get(server.url, max_bytes=100_000)


def test_fetch_errors_hide_the_urls_secrets(raw_server) -> None:
    """A URL's password and token never appear in the error that names it."""
    server = raw_server(_serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
    url = server.url.replace("http://", "http://reader:hunter2@") + "/feed?token=s3cr3t&n=1"
    with pytest.raises(FetchError) as raised:
        _get(url)
    message = str(raised.value)
    assert "hunter2" not in message and "s3cr3t" not in message
    assert "http://***@127.0.0.1" in message and "token=***&n=1" in message

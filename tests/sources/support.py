"""Helpers for source tests: recorded data, a raw-socket HTTP server, captured log lines."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pomabotd.log import logger
from pomabotd.sources.http import HttpLimits

DATA = Path(__file__).parent.parent / "data"
GAMMA_SAMPLE = DATA / "gamma" / "markets_sample_50.json"
RSS = DATA / "rss"
CAPTURES = (
    RSS / "bbc_world_2026-09-25.xml",
    RSS / "fed_press_all_2026-09.xml",
    RSS / "sec_press_releases_2026-08.rss",
)


def gamma_objects() -> list[dict]:
    """The 50 recorded Gamma market objects, as decoded JSON."""
    return json.loads(GAMMA_SAMPLE.read_text(encoding="utf-8"))


def limits(**changes: float) -> HttpLimits:
    """Small, fast limits for tests: no waiting between retries."""
    values = {"deadline_s": 5.0, "max_bytes": 8 * 1024 * 1024, "retry_attempts": 2,
              "retry_max_wait_s": 0.0}
    values.update(changes)
    return HttpLimits(
        deadline_s=float(values["deadline_s"]),
        max_bytes=int(values["max_bytes"]),
        retry_attempts=int(values["retry_attempts"]),
        retry_max_wait_s=float(values["retry_max_wait_s"]),
    )


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every pomabotd log message emitted during the test, as text."""
    lines: list[str] = []
    handler = logger.add(lambda message: lines.append(str(message).rstrip("\n")),
                         format="{level} {message}", level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(handler)


class RawServer:
    """A real TCP server on 127.0.0.1 that answers every connection with `script(conn)`.

    For what a well-behaved HTTP server library will not do: lie about Content-Length, or
    send one byte a second. `sent` counts the bytes written; the thread ends with the test.
    """

    def __init__(self, script: Callable[[socket.socket, RawServer], None]) -> None:
        self.script = script
        self.sent = 0
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def send(self, conn: socket.socket, data: bytes) -> bool:
        """Write `data`; False once the client has gone or the server is stopping."""
        if self._stop.is_set():
            return False
        try:
            conn.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True

    def stopping(self) -> bool:
        return self._stop.is_set()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)  # the request; its content does not matter here
                self.script(conn, self)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, RawServer], None]], RawServer]]:
    """Start RawServers for the test and stop every one of them afterwards."""
    servers: list[RawServer] = []

    def start(script: Callable[[socket.socket, RawServer], None]) -> RawServer:
        server = RawServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def drip(conn: socket.socket, server: RawServer) -> None:
    """Headers at once, then a JSON body one byte a second, for at most 30 seconds."""
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 30\r\n\r\n")
    for byte in b'[' + b' ' * 28 + b']':
        if not server.send(conn, bytes([byte])):
            return
        for _ in range(10):
            if server.stopping():
                return
            time.sleep(0.1)

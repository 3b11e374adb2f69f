"""The status endpoint's client connections, bounded so that no client can take what the
cycles need.

The endpoint runs on the daemon's own event loop, in the daemon's own process: every
connection it holds is a file descriptor a cycle cannot have. Served by asyncio's own server,
1,127 idle connections under a soft limit of 1,024 open files made every cycle fail with
EMFILE, and asyncio logged `socket.accept() out of system resource` 100,000 times. So the
endpoint accepts its connections itself, here, and every route is served under these rules by
being on the server:

- **A bound.** At most `limit` connections at once (`daemon.status_max_connections`, and never
  more than a quarter of the process's open-file limit). When one more arrives, the idlest
  connection (the one that has waited longest for a request) is closed to make room, else the
  oldest stream (a request on one of the `streams` paths, which lasts as long as its client
  stays: the status page's updates); when every one is in the middle of any other request,
  the newcomer is closed instead. So streams held open never shut out `/healthz`.
- **A deadline for each request.** A connection that has not sent a complete request within
  `timeout_s` of opening, or of its last response (`daemon.status_timeout_s`), is closed: idle
  and half-sent connections do not outlive it.
- **No spinning.** An accept that fails for lack of descriptors (or any reason but the one
  connection's) waits `ACCEPT_RETRY_S` before the next, instead of asyncio's retry loop
  logging once per attempt.

`ConnectionGuard.middleware` must be the application's first middleware: it is how the guard
learns that a request arrived and when it has been answered.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from pomabotd.log import logger

__all__ = ["ACCEPT_RETRY_S", "ConnectionGuard"]

#: Seconds to wait after an accept failed for lack of descriptors or memory.
ACCEPT_RETRY_S: Final = 0.5
#: Accept errors about one connection only; any other (out of descriptors or memory above all)
#: waits `ACCEPT_RETRY_S` before the next accept.
_ONE_CONNECTION: Final = frozenset({errno.ECONNABORTED, errno.EAGAIN, errno.EINTR, errno.EPROTO,
                                    errno.EPERM})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Limits = Callable[[], tuple[int, float]]


class _Connection:
    """One accepted connection: whether a request is being handled on it, and since when it
    has been waiting for one."""

    __slots__ = ("busy", "protocol", "since", "streaming", "timer", "transport")

    def __init__(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
        self.transport = transport
        self.protocol = protocol
        self.busy = 0
        self.since = time.monotonic()
        self.streaming = False
        self.timer: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """Accepts the endpoint's connections within the bound and closes those that wait too long.

    `limits()` gives the current (most connections, seconds to wait for a request); it is asked
    at every connection, so a reload applies at once. A request for one of the `streams` paths
    lasts as long as its client stays; its connection may be closed to make room.
    """

    def __init__(self, limits: Limits, streams: frozenset[str] = frozenset()) -> None:
        self._limits = limits
        self._streams = streams
        self._open: dict[asyncio.BaseProtocol, _Connection] = {}
        self.refused = 0
        self.evicted = 0
        self.expired = 0

    @property
    def open_connections(self) -> int:
        """Connections held now."""
        self._forget_closed()
        return len(self._open)

    async def serve(
        self, sock: socket.socket, factory: Callable[[], asyncio.BaseProtocol]
    ) -> None:
        """Accept connections on the listening `sock` for protocols from `factory`, until
        cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _ONE_CONNECTION:
                    continue  # that client gave up; the next may be fine
                logger.bind(event="status_accept_failed", errno=exc.errno).warning(
                    "status endpoint: cannot accept a connection ({}); trying again in {:g} s",
                    exc.strerror or exc, ACCEPT_RETRY_S,
                )
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            limit, timeout_s = self._limits()
            if not self._make_room(limit):
                self.refused += 1
                conn.close()
                logger.bind(event="status_connection_refused", limit=limit).warning(
                    "status endpoint: {} connections, every one in a request "
                    "(daemon.status_max_connections); a new one was closed", limit,
                )
                continue
            conn.setblocking(False)
            try:
                transport, protocol = await loop.connect_accepted_socket(factory, conn)
            except OSError:
                conn.close()
                continue
            entry = _Connection(transport, protocol)
            self._open[protocol] = entry
            self._wait_for_request(entry, timeout_s)

    def close_all(self) -> None:
        """Close every connection at once (the endpoint is stopping)."""
        for entry in self._open.values():
            self._cancel_timer(entry)
            entry.transport.abort()
        self._open.clear()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Mark the connection busy while its request is handled; once answered, it has
        `timeout_s` again to send the next one."""
        entry = self._open.get(request.protocol)
        if entry is None:
            return await handler(request)
        entry.busy += 1
        self._cancel_timer(entry)
        if request.path in self._streams:
            entry.streaming = True
            entry.since = time.monotonic()
        try:
            return await handler(request)
        finally:
            entry.busy -= 1
            if not entry.busy:
                entry.streaming = False
                entry.since = time.monotonic()
                self._wait_for_request(entry, self._limits()[1])

    def _make_room(self, limit: int) -> bool:
        """Whether one more connection may be held, closing the idlest (else the oldest
        stream) if need be."""
        self._forget_closed()
        if len(self._open) < limit:
            return True
        idle = [(entry.since, protocol) for protocol, entry in self._open.items()
                if not entry.busy]
        streams = [(entry.since, protocol) for protocol, entry in self._open.items()
                   if entry.busy and entry.streaming]
        if not idle and not streams:
            return False
        _, oldest = min(idle or streams, key=lambda pair: pair[0])
        self.evicted += 1
        self._close(oldest)
        logger.bind(event="status_connection_evicted", limit=limit).warning(
            "status endpoint: {} connections open (daemon.status_max_connections); closed "
            "the {} to make room", limit, "idlest" if idle else "oldest stream",
        )
        return True

    def _wait_for_request(self, entry: _Connection, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(timeout_s, self._expire, entry)

    def _expire(self, entry: _Connection) -> None:
        entry.timer = None
        if not entry.busy and self._open.get(entry.protocol) is entry:
            self.expired += 1
            self._close(entry.protocol)

    def _close(self, protocol: asyncio.BaseProtocol) -> None:
        entry = self._open.pop(protocol)
        self._cancel_timer(entry)
        entry.transport.abort()

    def _forget_closed(self) -> None:
        for protocol in [p for p, e in self._open.items() if e.transport.is_closing()]:
            self._cancel_timer(self._open.pop(protocol))

    @staticmethod
    def _cancel_timer(entry: _Connection) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

"""sd_notify: tell systemd (`Type=notify`) that pomabotd is ready, reloading, alive, stopping.

The protocol is one datagram per message, `NAME=value` lines, sent to the AF_UNIX socket named
by `$NOTIFY_SOCKET` (a leading `@` names an abstract socket). It is small enough to write here,
and no maintained library does it better. Without `NOTIFY_SOCKET` nothing is sent at all.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "monotonic_usec", "watchdog_period"]


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it in `MONOTONIC_USEC=`."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_period(environ: Mapping[str, str]) -> float | None:
    """Seconds between `WATCHDOG=1` pings (half of systemd's `WatchdogSec=`), or None when no
    watchdog is armed for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Sends notifications to one socket; every method is a no-op without one."""

    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        self._socket: socket.socket | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A full or stalled receiver must never block the event loop: drop the message.
            self._socket.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """The notifier `$NOTIFY_SOCKET` asks for."""
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self._socket is not None

    def send(self, *fields: str) -> bool:
        """Send `NAME=value` fields as one datagram; False if it could not be delivered.

        A missing or full socket must never stop the daemon, so errors are swallowed.
        """
        if self._socket is None or self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            self._socket.sendto(message, self._address)
        except OSError:
            return False
        return True

    def status(self, text: str) -> bool:
        """`STATUS=`: one line systemctl shows; newlines would end the field, so none pass."""
        return self.send("STATUS=" + " ".join(text.split()))

    def close(self) -> None:
        """Close the socket."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

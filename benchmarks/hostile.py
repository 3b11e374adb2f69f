"""What hostile peers cost pomabotd: a compression bomb, and idle sockets against the status
endpoint. Every figure printed is measured here, on 127.0.0.1, none is assumed.

Run from a checkout with pomabotd installed (`uptime` first: on a busy machine the cycle
figures move, the memory ones do not):

    python benchmarks/hostile.py                       # both parts
    python benchmarks/hostile.py --part bomb
    python benchmarks/hostile.py --part sockets --connections 1127 --seconds 20

1. Bomb: `tests/data/bombs/zeros_2gib.gz.gz` (3,477 bytes marked `Content-Encoding: gzip,
   gzip`, 2 GiB once inflated) fetched through `pomabotd.sources.http.get` with the markets
   source's default cap of 64 MB, in a fresh process each time; its peak RSS above where it
   started (VmHWM, reset just before the fetch, less VmRSS then), against the same fetch of a
   plain 64 MB body (what any response at the cap costs).
   For comparison, httpx decoding the 512 MiB bomb by itself (as pomabotd did before).
2. Sockets: a daemon (1,000 synthetic markets, a cycle every `--interval` s) under a soft and
   hard limit of 1,024 open files, as systemd's default soft limit; `--seconds` of quiet, then
   as many with `--connections` idle and half-sent connections held against its status
   address (each one it closes is opened again). Cycles succeeded and failed in each phase,
   `/healthz` probes answered, the most descriptors the daemon held, and its log lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

BOMBS = Path(__file__).resolve().parents[1] / "tests" / "data" / "bombs"
CAP = 64 * 1024 * 1024

_FETCH = """
import asyncio, json, sys
import httpx
from pomabotd.errors import FetchError
from pomabotd.sources.http import HttpLimits, get, new_client

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

async def main():
    if sys.argv[2] == "httpx":
        async with httpx.AsyncClient() as client:
            return len((await client.get(sys.argv[1])).content)
    limits = HttpLimits(deadline_s=120, max_bytes=int(sys.argv[3]), retry_attempts=0,
                        retry_max_wait_s=0)
    async with new_client() as client:
        return len((await get(client, sys.argv[1], limits, what="bench")).body)

before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak starts again from here, not from the imports' own peak
try:
    outcome = f"{asyncio.run(main()):,} bytes"
except FetchError as exc:
    outcome = str(exc)
print(json.dumps({"outcome": outcome, "growth_mb": (status("VmHWM") - before) / 1024}))
"""


def _serve_once(body: bytes, encoding: str | None) -> str:
    """A loopback server answering every request with `body`; its URL."""
    head = [b"HTTP/1.1 200 OK", f"Content-Length: {len(body)}".encode(), b"Connection: close"]
    if encoding:
        head.append(f"Content-Encoding: {encoding}".encode())
    response = b"\r\n".join(head) + b"\r\n\r\n" + body
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                with contextlib.suppress(OSError):
                    conn.sendall(response)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/"


def _fetch(url: str, how: str, cap: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _FETCH, url, how, str(cap)],
                          capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout)


def bomb() -> None:
    big = (BOMBS / "zeros_2gib.gz.gz").read_bytes()
    plain = _fetch(_serve_once(b" " * CAP, None), "pomabotd", CAP)
    bombed = _fetch(_serve_once(big, "gzip, gzip"), "pomabotd", CAP)
    print(f"bomb: {len(big):,} bytes of 'gzip, gzip' inflating to 2 GiB, cap {CAP:,} bytes")
    print(f"  plain {CAP:,}-byte body: peak +{plain['growth_mb']:.0f} MB ({plain['outcome']})")
    print(f"  2 GiB bomb:              peak +{bombed['growth_mb']:.0f} MB ({bombed['outcome']})")
    print(f"  bomb / plain body: {bombed['growth_mb'] / plain['growth_mb']:.2f}")
    small = (BOMBS / "zeros_512mib.gz.gz").read_bytes()
    raw = _fetch(_serve_once(small, "gzip, gzip"), "httpx", CAP)
    print(f"  for comparison, httpx decoding the 512 MiB bomb itself: peak "
          f"+{raw['growth_mb']:.0f} MB ({raw['outcome']})")


class _Holder:
    """`count` connections to `address`, every other one with half a request header sent;
    each one the server closes is opened again."""

    def __init__(self, address: tuple[str, int], count: int) -> None:
        self._address = address
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self.reopened = 0
        for index in range(count):
            self._connect(index)
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()

    def _connect(self, index: int) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(self._address)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if index % 2 else 0)
        self._selector.register(sock, events, index)

    def _hold(self) -> None:
        while not self._stop.is_set():
            for key, events in self._selector.select(0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if events & selectors.EVENT_WRITE:
                    with contextlib.suppress(OSError):
                        sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    self._selector.modify(sock, selectors.EVENT_READ, key.data)
                    continue
                try:
                    gone = sock.recv(4096) == b""
                except BlockingIOError:
                    continue
                except OSError:
                    gone = True
                if gone:
                    self._selector.unregister(sock)
                    sock.close()
                    self.reopened += 1
                    self._connect(key.data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def _health(url: str) -> dict:
    return httpx.get(url + "/healthz", timeout=10).json()


def _phase(url: str, seconds: float, process: psutil.Process) -> dict:
    before = _health(url)
    probes = answered = 0
    fds = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        probes += 1
        with contextlib.suppress(httpx.HTTPError):
            answered += httpx.get(url + "/healthz", timeout=5).status_code == 200
        fds = max(fds, process.num_fds())
        time.sleep(0.25)
    after = _health(url)
    return {"ok": after["cycles_ok"] - before["cycles_ok"],
            "failed": after["cycles_failed"] - before["cycles_failed"],
            "probes": probes, "answered": answered, "fds": fds}


def sockets(connections: int, seconds: float, interval: float) -> None:
    wanted = connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    with tempfile.TemporaryDirectory(prefix="pomabotd-hostile-") as scratch:
        log_path = Path(scratch) / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCH_", "POMABOTD_"))}
        env["POMABOTD_LOG_FORMAT"] = "json"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "pomabotd", "run", "--status-addr", "127.0.0.1:0",
                 "--interval", str(interval), "--out", "out"],
                cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=log,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
            )
        try:
            url = _wait_started(log_path, daemon)
            process = psutil.Process(daemon.pid)
            time.sleep(2 * interval)
            quiet = _phase(url, seconds, process)
            lines_before = len(log_path.read_text().splitlines())
            host, port = url.removeprefix("http://").rsplit(":", 1)
            holder = _Holder((host, int(port)), connections)
            try:
                attacked = _phase(url, seconds, process)
            finally:
                holder.close()
            lines = len(log_path.read_text().splitlines()) - lines_before
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    print(f"sockets: {connections:,} idle and half-sent connections, open-file limit 1,024, "
          f"a cycle every {interval:g} s, {seconds:g} s per phase")
    for name, phase in (("quiet", quiet), ("attacked", attacked)):
        kept = phase["ok"] / max(1, phase["ok"] + phase["failed"])
        print(f"  {name:9} cycles ok {phase['ok']:4}, failed {phase['failed']:3} "
              f"({kept:.0%} kept); /healthz {phase['answered']}/{phase['probes']}; "
              f"most descriptors held {phase['fds']}")
    print(f"  under attack: {lines} log lines, {holder.reopened:,} connections closed by the "
          f"daemon and opened again; cycles attacked / quiet: "
          f"{attacked['ok'] / max(1, quiet['ok']):.2f}")


def _wait_started(log_path: Path, daemon: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "start":
                return "http://" + json.loads(line)["status_addr"]
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited: {log_path.read_text()}")
        time.sleep(0.1)
    raise SystemExit("the daemon did not start within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("bomb", "sockets", "both"), default="both")
    parser.add_argument("--connections", type=int, default=1127)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if args.part in ("bomb", "both"):
        bomb()
    if args.part in ("sockets", "both"):
        sockets(args.connections, args.seconds, args.interval)


if __name__ == "__main__":
    main()

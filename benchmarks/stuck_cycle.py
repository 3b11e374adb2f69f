"""Time to 503 for a stuck cycle: how long a daemon whose cycle cannot finish says it is ok.

Run from a checkout with pomabotd installed:

    python benchmarks/stuck_cycle.py                 # deadline 5 s, 5 rounds
    python benchmarks/stuck_cycle.py --deadline 2 --rounds 3

A markets server on 127.0.0.1 answers each page of the Gamma keyset endpoint after 0.2 s with
one market and a fresh cursor, forever: the cycle never finishes loading. A daemon with
`daemon.cycle_timeout_s = DEADLINE` runs against it. Each round lets a cycle succeed first
(the server ends its listing, `/healthz` answers 200), then makes the server endless again and
measures the time from the start of the next cycle (as `/healthz` reports it,
`cycle_running_s`) to the first 503 of `/healthz` (polled every 20 ms). The figures are the
median and spread over the rounds, next to the deadline they are measured against; every
figure printed is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ENV = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
_PAGE_DELAY_S = 0.2
#: Recorded Gamma market objects: each page serves one of them under a fresh id.
_GAMMA = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "gamma"
                     / "markets_sample_50.json").read_text())


class _Endless:
    """Request times of an endless keyset listing, and a server answering it."""

    def __init__(self) -> None:
        self.pages = 0
        #: Whether a listing begun from now on is endless; one begun before ends normally.
        self.endless = threading.Event()
        self.listing_endless = False
        self.lock = threading.Lock()

    def serve(self) -> ThreadingHTTPServer:
        record = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith("/markets/keyset"):
                    self._send(b"[]")  # held markets asked for by id: none of them
                    return
                with record.lock:
                    record.pages += 1
                    page = record.pages
                    if "after_cursor" not in self.path:
                        record.listing_endless = record.endless.is_set()
                    endless = record.listing_endless
                time.sleep(_PAGE_DELAY_S)
                if endless:
                    listing: dict = {
                        "markets": [dict(_GAMMA[page % len(_GAMMA)], id=f"endless-{page}")],
                        "next_cursor": f"cursor-{page}",
                    }
                else:  # the whole recorded listing, on one last page
                    listing = {"markets": _GAMMA}
                self._send(json.dumps(listing).encode())

            def _send(self, body: bytes) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the daemon abandoned the cycle mid-page

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server



def _health(url: str) -> tuple[int, dict]:
    response = httpx.get(url + "/healthz", timeout=10)
    return response.status_code, response.json()


def _until(what: str, check: Callable[[], object], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _status_url(log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"event":"start"' in line:
                return f"http://{json.loads(line)['status_addr']}"
        time.sleep(0.05)
    raise RuntimeError(f"the daemon did not start:\n{log.read_text()}")


def _round(url: str, endless: _Endless) -> float:
    """Let one cycle succeed, make the listing endless, and time the next cycle to 503.

    A cycle that began just before the switch may still fetch its first page after it, get
    the endless listing and fail first: `/healthz` is then 503 already when the measured
    cycle starts, and the attempt is made again.
    """
    while True:
        endless.endless.clear()
        _until("a cycle that succeeds", lambda: _health(url)[0] == 200)
        switched = time.monotonic()
        endless.endless.set()
        while True:  # a cycle that started after the switch: its listing is endless
            polled = time.monotonic()
            status, body = _health(url)
            running = body["cycle_running_s"]
            if running is not None and polled - running > switched:
                break
            time.sleep(0.01)
        if status != 200:
            continue
        started = polled - running
        _until("503", lambda: _health(url)[0] == 503)
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deadline", type=float, default=5.0, help="daemon.cycle_timeout_s")
    parser.add_argument("--rounds", type=int, default=5, help="stuck cycles measured")
    args = parser.parse_args()
    endless = _Endless()
    server = endless.serve()
    with tempfile.TemporaryDirectory(prefix="pomabotd-stuck-") as scratch:
        workdir = Path(scratch)
        (workdir / "pomabotd.toml").write_text(
            f"[daemon]\ncycle_timeout_s = {args.deadline}\ninterval_s = 0.5\n")
        log = workdir / "daemon.log"
        with log.open("wb") as sink:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "pomabotd", "run", "--config", "pomabotd.toml",
                 "--markets", "polymarket", "--polymarket-url",
                 f"http://127.0.0.1:{server.server_address[1]}", "--out", "out",
                 "--status-addr", "127.0.0.1:0"],
                cwd=workdir, env=ENV, stdout=subprocess.DEVNULL, stderr=sink,
            )
            try:
                url = _status_url(log)
                to_503 = []
                for round_ in range(args.rounds):
                    to_503.append(_round(url, endless))
                    print(f"round {round_ + 1}: 503 after {to_503[-1]:.2f} s")
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
    server.shutdown()
    load = os.getloadavg()
    print(f"deadline (daemon.cycle_timeout_s): {args.deadline:g} s; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"time to 503 for a stuck cycle: median {statistics.median(to_503):.2f} s "
          f"(min {min(to_503):.2f}, max {max(to_503):.2f}), "
          f"{statistics.median(to_503) - args.deadline:+.2f} s past the deadline")


if __name__ == "__main__":
    main()

"""The status page and the JSON API over plain HTTP, from a real daemon on 127.0.0.1: the
security headers on every answer, CORS for the origins `daemon.cors_origins` lists and no
other, the configuration refused when it names a bad origin, and the page's stream ending when
the daemon stops."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RunCli
from daemon_process import DaemonProcess, wait_for

ALLOWED = "https://ops.example"
TOKEN = "http-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: Every kind of answer: the page, its parts, a static file, a 404, JSON, the exposition.
PATHS = ("/", "/page/sections", "/static/page.js", "/static/nothing.js", "/healthz",
         "/api/positions", "/api/batch/config", "/metrics")

pytestmark = pytest.mark.xdist_group("status_page")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon allowing one origin and requiring a status token, cycling every half second on
    the synthetic source."""
    workdir = tmp_path_factory.mktemp("page-http")
    (workdir / "pomabotd.toml").write_text(f'[daemon]\ncors_origins = ["{ALLOWED}"]\n')
    started = DaemonProcess(workdir, "--config", "pomabotd.toml", "--out", "out",
                            "--interval", "0.5",
                            env={"BATCH_WORKERS": "0", "POMABOTD_STATUS_TOKEN": TOKEN})
    try:
        wait_for("a cycle", lambda: httpx.get(started.url + "/healthz", timeout=10)
                 .json()["cycles_ok"] >= 1)
        yield started
    finally:
        started.finish()


def test_every_answer_forbids_inline_script_framing_and_sniffing(daemon: DaemonProcess) -> None:
    """The page, its sections, its static files, a 404, the JSON API and the metrics all carry
    a Content-Security-Policy without inline script, `frame-ancestors 'none'` and nosniff,
    and so do their 401s without the token."""
    for path, headers in [(path, headers) for path in PATHS for headers in ({}, BEARER)]:
        response = httpx.get(daemon.url + path, headers=headers, timeout=10)
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy, path
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy, path
        assert response.headers.get("x-content-type-options") == "nosniff", path
        assert response.headers.get("x-frame-options") == "DENY", path
    script = httpx.get(daemon.url + "/static/page.js", timeout=10)
    assert script.status_code == 200, "the static files need no token"
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(daemon.url + "/static/..%2Fpage.py", timeout=10).status_code == 404
    login = httpx.get(daemon.url + "/", timeout=10)
    assert login.status_code == 401 and 'action="/login"' in login.text
    assert httpx.get(daemon.url + "/page/sections", timeout=10).status_code == 401
    page = httpx.get(daemon.url + "/", headers=BEARER, timeout=10).text
    assert '<script src="/static/page.js" defer></script>' in page
    assert page.count("<script") == 1 and " style=" not in page


def test_the_json_api_answers_the_listed_origins_only(daemon: DaemonProcess) -> None:
    """A listed origin is granted on the JSON API and its preflight (answered without the
    token, which a browser never sends on one); another origin gets no grant (its preflight
    403), and the page itself grants none."""
    with httpx.Client(base_url=daemon.url, timeout=10, headers=BEARER) as client:
        for path in ("/healthz", "/api/positions", "/metrics"):
            granted = client.get(path, headers={"Origin": ALLOWED})
            assert granted.headers["access-control-allow-origin"] == ALLOWED, path
            assert "Origin" in granted.headers.get_list("vary"), path
            other = client.get(path, headers={"Origin": "https://evil.example"})
            assert other.status_code == 200
            assert "access-control-allow-origin" not in other.headers, path
        preflight = {"Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "authorization"}
        allowed = httpx.options(daemon.url + "/api/positions", timeout=10,
                                headers={"Origin": ALLOWED, **preflight})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        assert allowed.headers["access-control-allow-methods"] == "GET"
        assert allowed.headers["access-control-allow-headers"] == "Authorization"
        refused = client.options("/api/positions",
                                 headers={"Origin": "https://evil.example", **preflight})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        page = client.get("/", headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in page.headers


@pytest.mark.parametrize("origin", ["https://ops.example/", "ops.example", "https://a.example/x",
                                    "ftp://ops.example", "https://*.example"])
def test_a_bad_origin_is_refused_naming_the_key(run_cli: RunCli, tmp_path: Path,
                                                origin: str) -> None:
    """An origin with a path, no scheme, another scheme or a wildcard host exits 2 naming
    `daemon.cors_origins`."""
    (tmp_path / "pomabotd.toml").write_text(f'[daemon]\ncors_origins = ["{origin}"]\n')
    result = run_cli("config", "--config", "pomabotd.toml")
    assert result.returncode == 2, result.stderr
    assert "daemon.cors_origins" in result.stderr


def test_every_origin_is_refused_while_a_token_is_required(run_cli: RunCli,
                                                           tmp_path: Path) -> None:
    """`cors_origins = ["*"]` with `daemon.status_token` set exits 2 naming both keys; without
    a token it is taken."""
    (tmp_path / "pomabotd.toml").write_text('[daemon]\ncors_origins = ["*"]\n')
    result = run_cli("config", "--config", "pomabotd.toml",
                     env={"POMABOTD_STATUS_TOKEN": TOKEN})
    assert result.returncode == 2, result.stderr
    assert "daemon.cors_origins" in result.stderr and "daemon.status_token" in result.stderr
    assert TOKEN not in result.stderr
    assert run_cli("config", "--config", "pomabotd.toml").returncode == 0


def test_open_streams_do_not_hold_a_stop(tmp_path: Path) -> None:
    """A daemon with two pages' update streams open stops on SIGTERM promptly, exits 0 and
    leaves no process behind."""
    daemon = DaemonProcess(tmp_path, "--out", "out", "--interval", "0.5",
                           env={"BATCH_WORKERS": "0"})
    try:
        wait_for("a cycle", lambda: httpx.get(daemon.url + "/healthz", timeout=10)
                 .json()["cycles_ok"] >= 1)
        with contextlib.ExitStack() as stack:
            for _ in range(2):
                client = stack.enter_context(httpx.Client(timeout=30))
                response = stack.enter_context(client.stream("GET", daemon.url + "/page/stream"))
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
                lines = response.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) \
                    == "event: update"
            daemon.remember_descendants()
            stopped = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit(timeout=30) == 0
            assert time.monotonic() - stopped < 10
        assert daemon.leftovers() == []
    finally:
        daemon.finish()

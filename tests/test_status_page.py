"""The status page of a real daemon on 127.0.0.1, opened in a real headless Chromium: Playwright
(the test extra) driving Debian's `chromium`, never a browser Playwright downloads.

What a person sees is checked in the browser: the tables and charts, hostile market titles and
a hostile feed name shown as text with no script run and no dialog opened, the page updating
itself in place as cycles finish (over its stream, and by polling when the stream cannot be
had), and no Content-Security-Policy violation. One browser and one daemon serve the module; a
screenshot is kept under the test's temporary directory and its path printed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import DATA
from daemon_process import DaemonProcess, gone, wait_for
from halt_inputs import THREE, market_line, signal_lines

CHROMIUM = "/usr/bin/chromium"
#: How the browser is started: headless, and quiet (no update checks, sync or first-run page).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE_QUESTION = '<script>window.__pwned = 1; alert("script")</script> Will a happen?'
HOSTILE_IMAGE = '<img src=x onerror="window.__pwned = 2; alert(2)"> Will b happen?'
HOSTILE_FEED = "feeds/<img src=x onerror=alert(3)>.xml"
TOKEN = "page-token-0123456789abcdef"
#: The top row's cycle number passes `n`.
NEXT_CYCLE = "n => Number(document.querySelector('#cycle-table tbody tr td').textContent) > n"

pytestmark = pytest.mark.xdist_group("status_page")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; it and every process it started are gone
    afterwards."""
    from playwright.sync_api import sync_playwright

    assert os.access(CHROMIUM, os.X_OK), "Debian's chromium is needed: apt-get install chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=ARGS)
        browsers = [p for p in psutil.Process().children(recursive=True)
                    if "chrom" in p.name()]
        assert browsers, "no chromium process started"
        try:
            yield chromium
        finally:
            chromium.close()
    wait_for("chromium to exit", lambda: all(gone(p) for p in browsers), timeout=10)


def write_inputs(directory: Path) -> tuple[str, ...]:
    """Markets a, b and c that open at once, two of them with hostile questions, and a local
    feed with a hostile name; the `run` arguments that read them."""
    questions = {"a": HOSTILE_QUESTION, "b": HOSTILE_IMAGE}
    (directory / "markets.jsonl").write_text("".join(
        market_line(i, c, 40, questions.get(i, "")) for i, c in THREE
    ))
    (directory / "signals.jsonl").write_text("".join(
        signal_lines(i, "up", "10:00", "11:00") for i, _ in THREE
    ))
    (directory / "feeds").mkdir()
    (directory / HOSTILE_FEED).write_bytes((DATA / "rss" / "bbc_world_2026-09-25.xml").read_bytes())
    (directory / "pomabotd.toml").write_text(
        f"[sources]\nfeeds = [{json.dumps(HOSTILE_FEED)}]\n"
    )
    return ("--config", "pomabotd.toml", "--markets", "markets.jsonl", "--signals",
            "signals.jsonl", "--as-of", "2026-06-01T12:00:00Z", "--out", "out")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the module, cycling every second, with two open positions on hostile
    titles and a status token; killed by pid afterwards, leaving no process."""
    workdir = tmp_path_factory.mktemp("page-daemon")
    started = DaemonProcess(workdir, *write_inputs(workdir), "--interval", "1",
                            env={"BATCH_WORKERS": "0", "POMABOTD_STATUS_TOKEN": TOKEN})
    try:
        wait_for("two cycles", lambda: healthz(started)["cycles_ok"] >= 2)
        yield started
    finally:
        started.finish()
    assert started.leftovers() == []


def healthz(daemon: DaemonProcess) -> dict[str, Any]:
    return httpx.get(daemon.url + "/healthz", timeout=10).json()


class Watched:
    """A page in a fresh browser context with everything it says recorded: console lines,
    script errors, dialogs."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def csp_violations(self) -> list[str]:
        return [line for line in self.console
                if "Content Security Policy" in line or "Refused to" in line]

    def top_cycle(self) -> int:
        return int(self.page.locator("#cycle-table tbody tr").first.locator("td").first
                   .inner_text())

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    """A fresh context (no cookies) and page of the shared browser, closed afterwards."""
    opened = Watched(browser)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def signed_in(watched: Watched, daemon: DaemonProcess) -> Watched:
    """`watched` with the session cookie, from posting the token to the login form's address
    (the context's requests share its cookies)."""
    response = watched.context.request.post(daemon.url + "/login", form={"token": TOKEN})
    assert response.ok
    return watched


def test_the_page_shows_the_daemon_escapes_what_it_is_given_and_updates_in_place(
    daemon: DaemonProcess, signed_in: Watched, tmp_path: Path
) -> None:
    """Health, the cycles table and its three charts, the positions with their marks, the
    equity chart and the sources of a daemon holding positions on markets titled `<script>...`
    and `<img onerror>` and reading a feed named `<img onerror>`: every hostile string shows
    as text, no script of it runs and no dialog opens; when the next cycle finishes the page
    changes in place over its stream (no navigation); no CSP violation is reported."""
    watched = signed_in
    page = watched.page
    response = page.goto(daemon.url + "/")
    assert response is not None and response.status == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy

    assert page.locator("#verdict").inner_text() == "Healthy"
    assert page.locator("#cycle-table tbody tr").count() >= 2
    assert page.locator("#cycle-chart svg polyline").count() == 3
    assert page.locator("#equity-chart svg polyline").count() == 1
    points = page.locator("#cycle-chart svg polyline").first.get_attribute("points") or ""
    assert len(points.split()) >= 2
    questions = page.locator("#position-table .question .q").all_inner_texts()
    assert HOSTILE_QUESTION in questions and HOSTILE_IMAGE in questions
    first = page.locator("#position-table tbody tr").first.locator("td")
    assert [first.nth(i).inner_text() for i in (2, 3)] == ["40", "40"]  # entry, mark (cents)
    assert HOSTILE_FEED in page.locator("#feed-table").inner_text()
    assert page.locator("img, script:not([src])").count() == 0
    assert page.evaluate("window.__pwned") is None

    page.evaluate("window.__marker = 'still the same document'")
    before = watched.top_cycle()
    page.wait_for_function(NEXT_CYCLE, arg=before, timeout=30_000)
    assert page.evaluate("window.__marker") == "still the same document"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.locator("#live").inner_text() == "live updates: on"
    assert watched.top_cycle() > before
    assert page.evaluate("window.__pwned") is None
    assert watched.dialogs == [] and watched.errors == []
    assert watched.csp_violations() == []
    screenshot = tmp_path / "status-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_without_a_stream_the_page_polls_and_still_updates_in_place(
    daemon: DaemonProcess, signed_in: Watched
) -> None:
    """In a browser without EventSource the page asks for its sections every few seconds and
    puts them in place: a newer cycle shows without a navigation."""
    watched = signed_in
    page = watched.page
    page.add_init_script("delete window.EventSource;")
    page.goto(daemon.url + "/")
    assert page.evaluate("typeof window.EventSource") == "undefined"
    page.evaluate("window.__marker = 1")
    before = watched.top_cycle()
    page.wait_for_function(NEXT_CYCLE, arg=before, timeout=30_000)
    assert page.evaluate("window.__marker") == 1
    assert page.locator("#live").inner_text().startswith("live updates: polling")
    assert watched.csp_violations() == [] and watched.errors == []


def test_a_status_token_guards_the_page_and_its_stream(daemon: DaemonProcess,
                                                       watched: Watched) -> None:
    """With `daemon.status_token` set, the page, its stream and its sections answer 401 without
    it; the page asks for it in a form that refuses a wrong one; the right one is kept as an
    HttpOnly, SameSite=Strict cookie that does not hold it, with which the page updates in
    place over its stream."""
    for path in ("/", "/page/stream", "/page/sections", "/api/positions"):
        assert httpx.get(daemon.url + path, timeout=10).status_code == 401, path
    page = watched.page
    response = page.goto(daemon.url + "/")
    assert response is not None and response.status == 401
    page.fill("#token", "not-the-token-at-all")
    page.click("button[type=submit]")
    assert page.locator(".reason").inner_text() == "That is not the token."
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#cycle-table")
    assert page.url == daemon.url + "/"
    (cookie,) = watched.context.cookies()
    assert cookie["name"] == "pomabotd_session"
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""
    before = watched.top_cycle()
    page.wait_for_function(NEXT_CYCLE, arg=before, timeout=30_000)
    assert page.locator("#live").inner_text() == "live updates: on"
    assert watched.csp_violations() == [] and watched.dialogs == [] and watched.errors == []

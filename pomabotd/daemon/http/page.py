"""The status page: `GET /`, server-rendered HTML that keeps itself up to date.

    GET /               the page (templates/page.html), every section rendered
    GET /page/sections  the sections alone, as JSON {version, generated_at, sections: {id: html}}
    GET /page/stream    Server-Sent Events: an `update` event with the same JSON whenever a
                        cycle finishes or fails or the configuration is reloaded, and at least
                        every `REFRESH_S` seconds (so a cycle running long shows)
    GET /static/...     the page's script and style sheet, shipped in the package
    POST /login         the status token from the login form, exchanged for the session
                        cookie (`pomabotd.daemon.http.session`)

The page works offline and builds nothing: the HTML comes from Jinja2 templates with
autoescaping on, so every string that came from outside (a market's question, a feed's name, a
reason) is escaped wherever it is printed; the charts are SVG drawn from numbers
(`pomabotd.daemon.http.view`). Its script (`static/page.js`) listens to the stream and puts the
sections it receives in place, or asks `/page/sections` every few seconds when the stream
cannot be had; the page is never reloaded. The script and styles are files, so the server's
Content-Security-Policy can forbid inline script and style altogether.

A stream holds its connection for as long as the page is open; when the status server's
connections reach their bound, the oldest stream is closed to make room
(`pomabotd.daemon.connections`) and its page reconnects, or polls.
"""

from __future__ import annotations

import asyncio
import hmac
from importlib import resources
from typing import Final

import jinja2
import msgspec
from aiohttp import web

from pomabotd.daemon.http.headers import secure
from pomabotd.daemon.http.session import session_cookie
from pomabotd.daemon.http.view import SECTIONS, PageView, page_view
from pomabotd.daemon.state import DaemonState

__all__ = ["PAGE_PATHS", "REFRESH_S", "STREAM_PATH", "StatusPage"]

#: The paths that answer the login form, not a JSON 401, when the token is missing.
PAGE_PATHS: Final = frozenset({"/"})

#: The path of the updates' stream: a request there lasts as long as the browser stays.
STREAM_PATH: Final = "/page/stream"
#: Seconds between two updates on the stream at most: the running cycle's time and the uptime
#: move even when no cycle finishes.
REFRESH_S: Final = 15.0
_STATIC: Final = resources.files("pomabotd.daemon.http") / "static"
_STATIC_TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_ENCODER: Final = msgspec.json.Encoder()
#: Seconds a browser may take to accept one update before its stream is given up.
_WRITE_S: Final = 10.0


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pomabotd.daemon.http", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class StatusPage:
    """The page's routes over one daemon's state; `close` ends the open streams."""

    def __init__(self, state: DaemonState) -> None:
        self._state = state
        self._templates = _environment()
        self._sections = self._templates.get_template("sections.html").module
        self._closing = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        """The page's routes, for the status server's application."""
        return [
            web.get("/", self.page),
            web.get("/page/sections", self.sections),
            web.get(STREAM_PATH, self.stream),
            web.get("/static/{name}", self.static),
            web.post("/login", self.login),
        ]

    def login_page(self, *, refused: bool = False) -> web.Response:
        """401 with the form that asks for the status token."""
        html = self._templates.get_template("login.html").render(refused=refused)
        return web.Response(text=html, status=401, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def login(self, request: web.Request) -> web.StreamResponse:
        """The form's token: the right one is kept as the session cookie and the browser sent
        to the page; a wrong one gets the form again, saying so."""
        token = self._state.config.daemon.status_token
        if not token:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        given = form.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(),
                                                                 token.encode()):
            return self.login_page(refused=True)
        response = web.Response(status=303, headers={"Location": "/",
                                                     "Cache-Control": "no-store"})
        session_cookie(response, token)
        return response

    async def page(self, request: web.Request) -> web.Response:
        view = page_view(self._state)
        html = self._templates.get_template("page.html").render(view=view)
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def sections(self, request: web.Request) -> web.Response:
        return web.Response(body=self._update(page_view(self._state)),
                            content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = secure(web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
        }))
        await response.prepare(request)
        changes = self._state.changes
        try:
            await _send(response, b"retry: 5000\n\n")
            while not self._closing.is_set():
                seen = changes.version
                data = self._update(page_view(self._state))
                await _send(response, b"event: update\ndata: " + data + b"\n\n")
                await changes.wait(seen, REFRESH_S)
        except (ConnectionResetError, TimeoutError):
            pass  # the browser went away, or stopped reading: this stream ends
        return response

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = _STATIC_TYPES.get(name[name.rfind("."):]) if "." in name else None
        resource = _STATIC / name
        if kind is None or "/" in name or not resource.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=resource.read_bytes(), content_type=kind,
                            headers={"Cache-Control": "no-cache"})

    def close(self) -> None:
        """End every open stream (the server is stopping), so that none holds the stop."""
        self._closing.set()
        self._state.changes.bump()

    def _update(self, view: PageView) -> bytes:
        rendered = {name: str(getattr(self._sections, name)(view)) for name in SECTIONS}
        return _ENCODER.encode({"version": view.version, "generated_at": view.generated_at,
                                "sections": rendered})


async def _send(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(_WRITE_S):
        await response.write(data)

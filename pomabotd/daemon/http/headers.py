"""The headers every answer of the status address carries, and CORS on its JSON API.

Security headers, on every response (the page, its updates, the JSON, the metrics, a 401):

- `Content-Security-Policy`: nothing loads but from the daemon itself, and no inline script or
  style runs at all (the page's script and style sheet are static files); no plugin, no
  `<base>`, forms post only to the daemon, and no other site may frame the page
  (`frame-ancestors 'none'`, and `X-Frame-Options: DENY` for browsers that predate it);
- `X-Content-Type-Options: nosniff`: a JSON answer holding a market's `<script>` title is never
  taken for HTML;
- `Referrer-Policy: no-referrer`: the daemon's address does not leak through the page's links.

CORS: the JSON API (`/healthz`, `/api/...`, `/metrics`) answers a browser script of another
origin only when that origin is listed in `daemon.cors_origins` (none by default): its
`Access-Control-Allow-Origin` is that origin, and a preflight (`OPTIONS`) is answered for `GET`
with the `Authorization` header (how a script gives the status token). `"*"` allows every
origin, and is refused when `daemon.status_token` is set (see `pomabotd.config`). No
credentials are allowed: the page's session cookie never crosses origins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from aiohttp import web

__all__ = ["CONTENT_SECURITY_POLICY", "JSON_API_PREFIXES", "cors", "security_headers"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_SECURITY_POLICY: Final = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
))
_SECURITY: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
#: Paths CORS applies to: the JSON API and the metrics, never the page.
JSON_API_PREFIXES: Final = ("/healthz", "/api/", "/metrics")
#: Seconds a browser may keep a preflight's answer.
_PREFLIGHT_MAX_AGE_S: Final = 600


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer with the security headers, errors (an HTTPException) included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_SECURITY)
        raise
    if not response.prepared:  # a stream already sent its headers itself
        response.headers.update(_SECURITY)
    return response


def secure(response: web.StreamResponse) -> web.StreamResponse:
    """`response` with the security headers, for one prepared by its handler (a stream)."""
    response.headers.update(_SECURITY)
    return response


def cors(origins: Callable[[], Sequence[str]]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The CORS middleware; `origins()` gives the allowed origins of the running configuration
    (asked at every request, so a reload applies at once)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not request.path.startswith(JSON_API_PREFIXES):
            return await handler(request)
        allowed = origins()
        granted = "*" if "*" in allowed else (origin if origin in allowed else None)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            # A preflight: answered here, before the token is asked for (a browser never
            # sends it on a preflight).
            response = web.Response(status=204 if granted else 403)
        else:
            try:
                response = await handler(request)  # type: ignore[assignment]
            except web.HTTPException as exc:
                _grant(exc, granted, preflight=False)
                raise
            _grant(response, granted, preflight=False)
            return response
        _grant(response, granted, preflight=True)
        return response

    return middleware


def _grant(response: web.StreamResponse, granted: str | None, *, preflight: bool) -> None:
    response.headers.add("Vary", "Origin")
    if granted is None:
        return
    response.headers["Access-Control-Allow-Origin"] = granted
    if preflight:
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = "Authorization"
        response.headers["Access-Control-Max-Age"] = str(_PREFLIGHT_MAX_AGE_S)

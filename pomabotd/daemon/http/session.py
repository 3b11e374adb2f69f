"""How a browser gives the status token: a login form, then a cookie that holds no token.

With `daemon.status_token` set, a script gives the token in `Authorization: Bearer <token>`; a
browser opening the page cannot. So `GET /` without it answers 401 with a form asking for the
token, which posts to `POST /login`; the right token is answered with a redirect to `/` and the
cookie `pomabotd_session`, whose value is an HMAC-SHA256 of a fixed label keyed by the token:
the token cannot be read back from it, and a new token makes every old cookie worthless. The
cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it, so
no other site can make a browser read the page or its stream) and `Path=/`, and lasts until the
browser is closed. It opens everything the token opens: the page, its stream and sections, the
JSON API and the metrics.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from aiohttp import web

__all__ = ["COOKIE", "has_session", "session_cookie", "session_value"]

COOKIE: Final = "pomabotd_session"
_LABEL: Final = b"pomabotd status page session v1"


def session_value(token: str) -> str:
    """The cookie's value for `token`: a keyed hash that does not reveal it."""
    return hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()


def has_session(request: web.Request, token: str) -> bool:
    """Whether the request carries the cookie of this token (compared in constant time)."""
    given = request.cookies.get(COOKIE, "")
    return bool(given) and hmac.compare_digest(given.encode(), session_value(token).encode())


def session_cookie(response: web.StreamResponse, token: str) -> None:
    """Set the session cookie of `token` on `response`."""
    response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict",
                        path="/")

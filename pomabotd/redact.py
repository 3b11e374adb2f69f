"""Secrets kept out of everything pomabotd shows: logs, errors, `pomabotd config`, the status
endpoint and metric labels.

A URL may carry credentials: a user and password before its host (`https://user:pw@host/`),
or a key in its query (`?api_key=...`, `?token=...`). `redact_url` replaces them with `***`
wherever a URL is shown; the rest of the URL stays, so it can still be recognised. A query
value counts as secret when its name says so (token, key, secret, password, auth, signature,
session, credential) or when it looks like a token itself (a long run of letters and digits).

Some URLs are a secret as a whole: a webhook's (`notify.webhook_url`) lets whoever knows it
post, and Slack's and Discord's carry their token in the path. `redact_secret_url` shows only
the scheme and host of those.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_secret_url", "redact_url"]

#: What a secret is shown as.
REDACTED: Final = "***"

_SECRET_NAME: Final = re.compile(
    r"token|key|secret|pass|auth|sig|session|credential|jwt|bearer", re.IGNORECASE
)
#: A query value that looks like a token whatever its name: 20 or more characters of the
#: alphabets keys are written in, with letters and digits both.
_TOKEN_VALUE: Final = re.compile(r"(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-.~+/=]{20,}")


def redact_url(text: str) -> str:
    """`text` with a URL's userinfo and secret-looking query values replaced by `***`; text
    that is not a URL with a host (a file path, a source name) comes back unchanged."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        return _scrub_unparsable(text)
    if not parts.netloc:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return text
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_secret_url(url: str) -> str:
    """A URL that is a secret as a whole, shown by its scheme and host only
    (`https://hooks.slack.com/***`); "" stays "", and text that is not a URL is hidden."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}{f':{port}' if port else ''}/{REDACTED}"


def _redact_query(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_secret(name, value) for name, value in pairs):
        return query
    return "&".join(
        f"{quote(name, safe='')}={REDACTED if _secret(name, value) else quote(value, safe='')}"
        for name, value in pairs
    )


def _secret(name: str, value: str) -> bool:
    return bool(value) and (
        _SECRET_NAME.search(name) is not None or _TOKEN_VALUE.fullmatch(value) is not None
    )


def _scrub_unparsable(text: str) -> str:
    """A URL `urlsplit` refuses: its userinfo and every query value are hidden, since its parts
    cannot be told apart reliably."""
    scheme, _, rest = text.partition("://")
    host, slash, tail = rest.partition("/")
    if "@" in host:
        host = f"{REDACTED}@{host.rpartition('@')[2]}"
    path, sep, query = f"{host}{slash}{tail}".partition("?")
    if sep:
        query = "&".join(f"{pair.split('=', 1)[0]}={REDACTED}" for pair in query.split("&"))
    return f"{scheme}://{path}{sep}{query}"

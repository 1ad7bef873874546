"""CSRF checks for console forms: the session's token in a hidden field (compared in constant
time) and, when the browser sends ``Origin``, the request's own origin. SameSite=Strict on the
cookie already keeps cross-site posts from carrying it; these checks hold even where it does not."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

from qcdr_federation.console.session import ConsoleSession


def own_origin(request: Request) -> str:
    # behind a TLS-terminating proxy the Host header still names the console; the scheme comes
    # from the URL uvicorn built (with --proxy-headers it honours X-Forwarded-Proto)
    url = request.url
    host = request.headers.get("host") or url.netloc
    return f"{url.scheme}://{host}".lower()


def origin_ok(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    return f"{parts.scheme}://{parts.netloc}".lower() == own_origin(request)


def token_ok(session: ConsoleSession, submitted: str | None) -> bool:
    if not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())

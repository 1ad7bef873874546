"""Keeping secrets out of error text: what an HTTP error may say, what a header secret may hold,
and scrubbing known secrets out of text that came from elsewhere (a receiver's error body).

httpx quotes a refused header back in full (``LocalProtocolError: Illegal header value
b'Bearer <token>\\n...'``), and receivers echo the path they were called on (``Cannot POST
/services/T000/B000/<secret>``), so neither may reach a log line, a stored row or the terminal as
it is."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx

MASK = "***"
# Path segments at least this long are treated as secrets when a URL is scrubbed: webhook ids and
# keys are long; "services", "hooks", "api", "v2" and the like are not.
SECRET_SEGMENT_MIN = 9
SECRET_MIN = 8  # shorter values are not scrubbed (no real secret is this short)


def describe_http_error(exc: BaseException) -> str:
    """``Type: message`` for an httpx error, or only the type where the message quotes what was
    being sent (a header value that httpx refused)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.LocalProtocolError | httpx.InvalidURL | httpx.UnsupportedProtocol):
        return name
    text = str(exc).strip()
    return f"{name}: {text}" if text else name


def check_header_secret(value: str) -> str:
    """``value`` when it can go into an HTTP header as it is; else ValueError (never quoting it).
    A token file with a second line, or a NUL from a binary file, would otherwise fail later inside
    httpx with the whole header in the message."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("holds a line break or another control character (one line, printable characters)")
    return value


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be secret: the whole URL, its path and query, and each long
    path segment (so an echo of the path alone, or of one segment, is caught too)."""
    parts = urlsplit(url)
    found = [url]
    if parts.path not in ("", "/"):
        found.append(parts.path)
        found += [s for s in parts.path.split("/") if len(s) >= SECRET_SEGMENT_MIN]
    if parts.query:
        found.append(parts.query)
    if parts.password:
        found.append(parts.password)
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret of ``SECRET_MIN`` characters or more replaced
    by ``***`` (longest first, so a URL is masked whole rather than around its path)."""
    # short values (an "X-Api-Version: 2" header) are not secrets and would mask digits anywhere
    for secret in sorted({s for s in secrets if len(s) >= SECRET_MIN}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text

"""One-line errors for everything that can go wrong talking to Qualys.

The original swallowed errors and returned ``{}``, so a bad password looked like "no findings".
Every failure here is an exception whose message alone tells an operator what to fix.
"""

from __future__ import annotations

import socket
import ssl

import httpx
from qcdr_common.secret_text import describe_http_error


class QualysError(Exception):
    """Base class; ``str(error)`` is a single line fit for a CLI."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class QualysAuthError(QualysError):
    """Credentials or token rejected, or none configured."""


class QualysConnectionError(QualysError):
    """The gateway could not be reached (DNS, refused, TLS, timeouts after retries)."""


class QualysPayloadError(QualysError):
    """The gateway answered with something that is not what the API returns."""


class QualysHTTPError(QualysError):
    """A non-retryable HTTP status, or a retryable one that persisted past the retry budget."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def connect_failure_kind(exc: BaseException) -> str:
    """``dns``, ``tls``, ``refused`` or ``other`` for a transport error (walks the cause chain)."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return "dns"
        if isinstance(cause, ssl.SSLError):
            return "tls"
        if isinstance(cause, ConnectionRefusedError):
            return "refused"
    # httpcore flattens some OS errors into its own exception with only the text preserved.
    text = " ".join(str(c) for c in _causes(exc)).lower()
    if "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "dns"
    if "certificate" in text or "ssl" in text or "tls" in text:
        return "tls"
    if "connection refused" in text or "errno 111" in text:
        return "refused"
    return "other"


def is_permanent_transport_error(exc: BaseException) -> bool:
    """DNS and TLS failures do not heal by retrying; refused connections and timeouts might."""
    return isinstance(exc, httpx.ConnectError) and connect_failure_kind(exc) in ("dns", "tls")


def transport_error(exc: httpx.HTTPError, url: httpx.URL | str) -> QualysConnectionError:
    """A one-line error naming the host for an httpx transport failure."""
    target = httpx.URL(url) if isinstance(url, str) else url
    host = target.host
    where = f"{host}:{target.port}" if target.port else host
    if isinstance(exc, httpx.TimeoutException):
        return QualysConnectionError(f"timed out talking to Qualys gateway {where} ({type(exc).__name__})")
    kind = connect_failure_kind(exc)
    if kind == "dns":
        return QualysConnectionError(
            f"cannot resolve Qualys gateway host {host!r} (DNS lookup failed); "
            "check QUALYS_PLATFORM / QUALYS_GATEWAY_URL"
        )
    if kind == "tls":
        return QualysConnectionError(f"TLS handshake with Qualys gateway {where} failed: {_first_line(exc)}")
    if kind == "refused":
        return QualysConnectionError(f"connection refused by Qualys gateway {where}")
    return QualysConnectionError(f"cannot talk to Qualys gateway {where}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    # describe_http_error leaves out what httpx quotes of a refused header (the access token)
    text = describe_http_error(exc).removeprefix(f"{type(exc).__name__}: ")
    return text.splitlines()[0][:200]

"""What an ``http_request`` event says, read once: method, URL parts, destination, user agent.

Ingest's Hubble adapter stores the flow as ``raw`` (bare or under ``"flow"``) with ``l7.http``
(``method``, ``url``, ``headers``); the destination address and port are the event's ``network``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from qcdr_common.contracts.events.v1 import SecurityEvent

CATEGORY = "http_request"


@dataclass(frozen=True, slots=True)
class HttpView:
    method: str
    url: str
    host: str  # lower case, no trailing dot; "" when the URL has none
    path: str  # "/" when the URL has none; without query and fragment
    destination_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    destination_port: int | None
    user_agent: str
    verdict: str

    @property
    def shown_url(self) -> str:
        """The URL without its query string (which often carries tokens)."""
        return self.url.split("?", 1)[0].split("#", 1)[0]


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _header(headers: Any, name: str) -> str:
    if isinstance(headers, list):
        for header in headers:
            h = _dict(header)
            if str(h.get("key", "")).lower() == name:
                return str(h.get("value", ""))
    return ""


def view(event: SecurityEvent) -> HttpView | None:
    """The request ``event`` describes, or None when it is not an HTTP request event."""
    if event.category != CATEGORY:
        return None
    flow = _dict(event.raw.get("flow", event.raw))
    http = _dict(_dict(flow.get("l7")).get("http"))
    method, url = http.get("method"), http.get("url")
    if not isinstance(method, str) or not isinstance(url, str) or not method or not url:
        return None
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return None
    net = event.network
    return HttpView(
        method=method.upper(),
        url=url,
        host=host or (net.domain or "" if net else ""),
        path=parts.path or "/",
        destination_ip=net.ip if net else None,
        destination_port=net.port if net else None,
        user_agent=_header(http.get("headers"), "user-agent"),
        verdict=str(flow.get("verdict") or "FORWARDED"),
    )

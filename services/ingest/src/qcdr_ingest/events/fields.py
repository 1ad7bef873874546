"""Small field parsers the adapters share: times, addresses, ports, image digests, container ids.

They run once or more per event on the hot path, so the common cases are cached and nothing
builds objects it does not return.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from datetime import UTC, datetime
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from pydantic import ValidationError
from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_ingest.events.registry import AdapterError

_TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?")
_RUNTIME_PREFIXES = ("containerd://", "docker://", "cri-o://", "crio://")
# Epoch nanoseconds between 2000-01-01 and 2200-01-01.
_NS_MIN, _NS_MAX = 946_684_800 * 10**9, 7_258_118_400 * 10**9


def type_name(value: Any) -> str:
    return type(value).__name__


def parse_time(value: Any, what: str = "time") -> datetime:
    """An aware UTC datetime from ISO 8601 (``Z`` or an offset; nanoseconds are cut to micro-
    seconds) or epoch nanoseconds. No zone is an error: guessing would shift events by hours."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise AdapterError(f"{what} {value[:40]!r} is not ISO 8601") from None
        if moment.utcoffset() is None:
            raise AdapterError(f"{what} {value[:40]!r} has no time zone")
        try:
            return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
        except OverflowError:  # "0001-01-01T00:00:00+01:00" is before year 1 in UTC
            raise AdapterError(f"{what} {value[:40]!r} is out of range") from None
    if isinstance(value, int) and not isinstance(value, bool):
        if not _NS_MIN <= value < _NS_MAX:
            raise AdapterError(f"{what} {value} is not plausible epoch nanoseconds")
        return datetime.fromtimestamp(value / 1e9, UTC)
    if value is None:
        raise AdapterError(f"{what} is missing")
    raise AdapterError(f"{what} must be an ISO 8601 string, got {type_name(value)}")


def text(value: Any) -> str | None:
    """A non-empty string, else None (sources do not pad their fields; this runs ~15 times per
    event, so it does no more than it must)."""
    return value if type(value) is str and value else None


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (optional nested objects)."""
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=16384)
def _ip_text(value: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, IPv6Address):
        # an IPv4-mapped IPv6 address (dual-stack sockets) is the IPv4 address
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        # a zone ("fe80::1%eth0") names an interface of the node that saw it, meaningless here,
        # and PostgreSQL's inet refuses it: the batch it came in would be refused whole
        if address.scope_id is not None:
            return IPv6Address(address.compressed.partition("%")[0])
    return address


def ascii_digits(text: str) -> bool:
    """Whether ``int(text)`` reads ``text`` as a plain number: ``str.isdigit`` is also true of
    "²" and other digits ``int`` refuses."""
    return text.isascii() and text.isdigit()


def ip(value: Any) -> IPv4Address | IPv6Address | None:
    return _ip_text(value) if isinstance(value, str) and value else None


def port(value: Any) -> int | None:
    if isinstance(value, str) and ascii_digits(value.strip()):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 65535:
        return value
    return None


def pid(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def container_id(value: str | None) -> str | None:
    if value:
        for prefix in _RUNTIME_PREFIXES:
            if value.startswith(prefix):
                return value[len(prefix) :] or None
    return value


def image_digest(image_ref: str | None) -> str | None:
    """``sha256:…`` from a reference like ``repo@sha256:…``."""
    if image_ref and "@" in image_ref:
        digest = image_ref.rpartition("@")[2]
        return digest or None
    return None


def basename(path: str | None) -> str | None:
    if not path:
        return None
    return posixpath.basename(path) or None


@lru_cache(maxsize=4096)
def technique(value: str) -> str | None:
    """``T1059.004`` from a tag such as ``T1059.004`` or ``mitre:t1059.004``; None otherwise."""
    candidate = value.strip().upper().rpartition(":")[2]
    return candidate if _TECHNIQUE.fullmatch(candidate) else None


def stable_id(source: str, *parts: str) -> str:
    """``<source>:<32 hex>`` from the parts that identify one observation (sha256, truncated:
    128 bits make a collision between two real events practically impossible)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f"{source}:{digest}"


def shorten(value: str, limit: int = 1000) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def validate_event(data: dict[str, Any]) -> SecurityEvent:
    """The event, validated once by pydantic's compiled validator; the first error as the reason."""
    try:
        return SecurityEvent.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise AdapterError(f"{where}: {error['msg']}") from None

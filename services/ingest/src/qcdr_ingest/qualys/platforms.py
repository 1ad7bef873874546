"""Qualys platforms (pods) and how a gateway base URL is chosen.

The original built gateway hosts from a pod number and always used ``.qualys.com``, so EU, CA, IN,
AE and UK tenants silently talked to a US gateway. Here every platform has its own host, taken
from the Qualys platform table, and anything unknown is an error rather than a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

DEFAULT_PLATFORM = "US2"


@dataclass(frozen=True, slots=True)
class Platform:
    name: str
    gateway_host: str
    api_host: str
    portal_host: str
    region: str

    @property
    def gateway_url(self) -> str:
        return f"https://{self.gateway_host}"


def _platform(name: str, domain: str, qg: int, region: str, *, legacy_hosts: bool = False) -> Platform:
    # US1 and EU1 predate the ``qgN.apps`` naming for their API and portal hosts.
    prefix = "" if legacy_hosts else f"qg{qg}.apps."
    return Platform(
        name=name,
        gateway_host=f"gateway.qg{qg}.apps.{domain}",
        api_host=f"qualysapi.{prefix}{domain}",
        portal_host=f"qualysguard.{prefix}{domain}",
        region=region,
    )


PLATFORMS: Mapping[str, Platform] = MappingProxyType(
    {
        p.name: p
        for p in (
            _platform("US1", "qualys.com", 1, "United States", legacy_hosts=True),
            _platform("US2", "qualys.com", 2, "United States"),
            _platform("US3", "qualys.com", 3, "United States"),
            _platform("US4", "qualys.com", 4, "United States"),
            _platform("EU1", "qualys.eu", 1, "Europe", legacy_hosts=True),
            _platform("EU2", "qualys.eu", 2, "Europe"),
            _platform("EU3", "qualys.it", 3, "Italy"),
            _platform("CA1", "qualys.ca", 1, "Canada"),
            _platform("IN1", "qualys.in", 1, "India"),
            _platform("AE1", "qualys.ae", 1, "UAE"),
            _platform("UK1", "qualys.co.uk", 1, "United Kingdom"),
            _platform("AU1", "qualys.com.au", 1, "Australia"),
            _platform("KSA1", "qualysksa.com", 1, "Saudi Arabia"),
        )
    }
)

_EXTRA_ALIASES = {
    "US1": ("us", "us01"),
    "US2": ("us02",),
    "US3": ("us03",),
    "US4": ("us04",),
    "EU1": ("eu", "eu01"),
    "EU2": ("eu02",),
    "EU3": ("eu03",),
    "CA1": ("ca", "canada"),
    "IN1": ("in", "india"),
    "AE1": ("ae", "uae"),
    "UK1": ("uk",),
    "AU1": ("au", "australia"),
    "KSA1": ("ksa", "saudi"),
}

# Lower-case alias -> canonical name; every canonical name is its own alias.
ALIASES: Mapping[str, str] = MappingProxyType(
    {
        **{name.lower(): name for name in PLATFORMS},
        **{alias: name for name, aliases in _EXTRA_ALIASES.items() for alias in aliases},
    }
)


def get_platform(name: str) -> Platform:
    """The platform for a name or alias (case-insensitive); ``ValueError`` lists the valid names."""
    canonical = ALIASES.get(name.strip().lower())
    if canonical is None:
        valid = ", ".join(PLATFORMS)
        raise ValueError(
            f"unknown Qualys platform {name!r}; valid platforms: {valid} (aliases such as 'eu', 'ca')"
        )
    return PLATFORMS[canonical]


def parse_gateway(gateway: str) -> str:
    """A base URL from a bare host (``https://`` implied) or a full http(s) URL.

    A path prefix is kept (for gateways behind a reverse proxy); a trailing slash is dropped so
    API paths can be appended as-is.
    """
    text = gateway.strip()
    if not text:
        raise ValueError("empty Qualys gateway")
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"Qualys gateway must be an http(s) URL or a host name, got {gateway!r}")
    if not parts.hostname:
        raise ValueError(f"Qualys gateway has no host: {gateway!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"Qualys gateway must not carry a query or fragment: {gateway!r}")
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"Qualys gateway has an invalid port: {gateway!r}") from exc
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def resolve_gateway(platform: str | None, gateway: str | None) -> str:
    """The gateway base URL: an explicit gateway wins, then the platform, then US2."""
    if gateway is not None and gateway.strip():
        return parse_gateway(gateway)
    if platform is not None and platform.strip():
        return get_platform(platform).gateway_url
    return PLATFORMS[DEFAULT_PLATFORM].gateway_url

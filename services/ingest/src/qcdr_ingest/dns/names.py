"""One spelling per domain name: lowercase, no trailing dot, IDNA (``xn--``) labels.

Feeds, queries and verdict requests spell the same name differently (``Pool.MineXMR.com.``,
``bücher.example``, ``xn--bcher-kva.example``); matching only works on one canonical form.
Labels are checked against the DNS limits (63 octets a label, 253 a name) but underscores are
allowed: service names such as ``_dmarc`` are real queries and must not be rejected.

Registered domains come from tldextract with its **bundled** public-suffix snapshot and no
download (``suffix_list_urls=()``), so nothing leaves the host. Only the ICANN section is used:
private suffixes such as dynamic-DNS providers (``duckdns.org``) stay registrable, which is what a
blocklist of those providers means.
"""

from __future__ import annotations

import re
from functools import lru_cache

import idna
import tldextract

MAX_NAME = 253
MAX_LABEL = 63
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False)


class InvalidNameError(ValueError):
    """Not a usable domain name; the message says why in a few words."""


@lru_cache(maxsize=65536)
def normalize(name: str) -> str:
    """The canonical form of ``name``; :class:`InvalidNameError` when it is not a domain name."""
    text = name.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise InvalidNameError("empty name")
    labels = []
    for label in text.split("."):
        if not label.isascii():
            try:
                label = idna.encode(label, uts46=True).decode("ascii")
            except idna.IDNAError:
                raise InvalidNameError(f"label {label[:63]!r} is not valid IDNA") from None
        if not _LABEL.fullmatch(label):
            raise InvalidNameError(f"label {label[:63]!r} is not a DNS label")
        labels.append(label)
    canonical = ".".join(labels)
    if len(canonical) > MAX_NAME:
        raise InvalidNameError(f"name longer than {MAX_NAME} characters")
    if _is_address(canonical):
        raise InvalidNameError("an IP address, not a domain name")
    return canonical


def try_normalize(name: str) -> str | None:
    try:
        return normalize(name)
    except InvalidNameError:
        return None


def _is_address(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


@lru_cache(maxsize=65536)
def public_suffix(name: str) -> str:
    """The ICANN public suffix of a canonical name (``co.uk``), or "" when it has none."""
    return _EXTRACT(name).suffix


@lru_cache(maxsize=65536)
def registered_domain(name: str) -> str | None:
    """``example.co.uk`` for ``a.b.example.co.uk``; None when there is none (``localhost``, a
    bare suffix)."""
    parts = _EXTRACT(name)
    if not parts.suffix or not parts.domain:
        return None
    return f"{parts.domain}.{parts.suffix}"


def parents(name: str) -> list[str]:
    """``name`` and each parent down to, but not including, its public suffix: the names a
    blocklist entry can match ``name`` by. A bare suffix (``com``, ``co.uk``) is never a parent,
    so a feed listing ``com`` by mistake blocks ``com`` and nothing under it."""
    suffix = public_suffix(name)
    labels = name.split(".")
    found = []
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        if candidate == suffix:
            break
        found.append(candidate)
    return found or [name]

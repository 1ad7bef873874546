"""Real site names for the benign side of training: the Chromium HSTS preload list.

The list is read at run time from the installed ``hstspreload`` package (BSD-3-Clause; the list
itself is Chromium's ``net/http/transport_security_state_static.json``, under Chromium's BSD-style
licence): about 160,000 names whose owners asked browsers to preload HTTPS for them, so every one
is a real site somebody runs. Nothing is copied into this repository; NOTICE beside this module
carries the attribution. The evaluation corpus (shared/corpora/dga) is never read here.

Names are split by a hash of their registered domain into disjoint parts, so the benign trigram
model, the trees and the threshold each see different sites.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from random import Random
from typing import Literal

from qcdr_analysis.dns.domains import split

Part = Literal["lm", "train", "validation"]
# Out of 10 hash buckets: 3 for the trigram model, 5 for the trees, 2 for the threshold.
_BUCKETS: dict[Part, range] = {"lm": range(0, 3), "train": range(3, 8), "validation": range(8, 10)}
# Freenom's free TLDs fill a sixth of the list (bulk-registered small sites); kept at a quarter of
# their count so the free ccTLDs do not read as a sign of a benign name.
_FREE_TLDS = frozenset({"tk", "ga", "cf", "ml", "gq"})
_FREE_KEEP = 4
_IS_LEAF = 0x80


def _hosts() -> list[str]:
    """Every host in the package's table: a flat run of (flags, length, label) entries whose leaf
    entries carry the whole host name."""
    data = resources.files("hstspreload").joinpath("hstspreload.bin").read_bytes()
    out, i = [], 0
    while i < len(data):
        flags, size = data[i], data[i + 1]
        if flags & _IS_LEAF:
            out.append(data[i + 2 : i + 2 + size].decode("ascii"))
        i += 2 + size
    return out


def _digest(registered: str) -> bytes:
    return hashlib.sha256(registered.encode()).digest()


@lru_cache(maxsize=1)
def _by_part() -> dict[Part, tuple[str, ...]]:
    seen: set[str] = set()
    parts: dict[Part, list[str]] = {p: [] for p in _BUCKETS}
    for host in sorted(set(_hosts())):
        name = split(host)
        reg = name.registered
        # One host per registered domain, Latin labels only (punycode labels score 0 anyway).
        if reg in seen or name.idn or not name.label or not name.known_suffix:
            continue
        seen.add(reg)
        digest = _digest(reg)
        if name.suffix in _FREE_TLDS and digest[1] % _FREE_KEEP:
            continue
        bucket = digest[0] % 10
        for part, buckets in _BUCKETS.items():
            if bucket in buckets:
                parts[part].append(host)
    return {p: tuple(v) for p, v in parts.items()}


@lru_cache(maxsize=1)
def preload_hosts() -> frozenset[str]:
    """Every host on the list (for reports that set apart names the model may have seen)."""
    return frozenset(_hosts())


def site_names(part: Part) -> tuple[str, ...]:
    """Real site names of one part, sorted (deterministic for a given package version)."""
    return _by_part()[part]


def sample_sites(part: Part, n: int, seed: int) -> list[str]:
    """``n`` names of a part drawn without replacement (all of them if the part is smaller)."""
    names = site_names(part)
    return Random(seed).sample(names, min(n, len(names)))

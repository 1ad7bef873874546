"""Policy versions: ``latest`` or a pinned ``v1.N``, as in the namespace label
``pod-security.kubernetes.io/enforce-version``.

``latest`` is the newest version any check registers a revision for (v1.37: the sysctl list grew),
which is also the newest version the upstream fixtures know.
"""

from __future__ import annotations

import functools
import re

LATEST_MINOR = 37
LATEST = "latest"
KNOWN_VERSIONS: tuple[str, ...] = (LATEST, *(f"v1.{minor}" for minor in range(LATEST_MINOR + 1)))

_PINNED = re.compile(r"v1\.(0|[1-9][0-9]{0,3})")


@functools.cache
def parse_version(version: str, *, clamp: bool = False) -> int:
    """The minor version ``version`` names (``latest`` -> the newest known).

    Unknown versions raise ``ValueError`` listing the known ones; with ``clamp`` a well-formed
    version newer than the newest known one means the newest, as upstream treats namespace labels
    written for a newer cluster.
    """
    if version == LATEST:
        return LATEST_MINOR
    match = _PINNED.fullmatch(version) if isinstance(version, str) else None
    if match is not None:
        minor = int(match.group(1))
        if minor <= LATEST_MINOR:
            return minor
        if clamp:
            return LATEST_MINOR
    raise ValueError(
        f"unknown Pod Security Standards version {version!r}: known are latest and v1.0 … v1.{LATEST_MINOR}"
    )

"""One CS API image record -> :class:`ImageRecord` (the columns of ``ingest_images``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qcdr_ingest.events.service import NUL_REASON

_HEX64 = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


class MalformedImageError(ValueError):
    """The record cannot be keyed (no sha), is not an object, or holds what cannot be stored."""


@dataclass(frozen=True, slots=True)
class ImageRecord:
    image_key: str  # sha256:<hex> of the image (config digest)
    image_id: str | None
    names: tuple[str, ...]  # registry/repository:tag
    digests: tuple[str, ...]  # sha256:<hex>: the image's own and its repo digests
    scanned: bool
    max_severity: int | None
    vulnerabilities: dict[str, int]
    last_scanned: datetime | None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _sha(value: Any) -> str | None:
    text = _text(value)
    match = _HEX64.fullmatch(text) if text else None
    return f"sha256:{match.group(1).lower()}" if match else None


def _name(entry: Mapping[str, Any], last: str) -> str | None:
    repository = _text(entry.get("repository"))
    if repository is None:
        return None
    registry = _text(entry.get("registry"))
    base = f"{registry}/{repository}" if registry else repository
    value = _text(entry.get(last))
    return f"{base}:{value}" if value else base


def _list(value: Any) -> list[Any]:
    """A JSON array, else nothing: a record's lists are optional, never iterated as anything else."""
    return value if isinstance(value, list) else []


# Epoch milliseconds from 2000 to 2200: anything else is not a scan time (inf and 10**18 would
# not even make a datetime).
_MS_MIN, _MS_MAX = 946_684_800_000, 7_258_118_400_000


def _scanned_at(value: Any, key: str) -> datetime | None:
    """``lastScanned``: epoch milliseconds; 0 or absent means never scanned."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        return None
    if not _MS_MIN <= value < _MS_MAX:
        raise MalformedImageError(f"image {key[:19]}: lastScanned {value} is not epoch milliseconds")
    return datetime.fromtimestamp(value / 1000, UTC)


def parse_image(item: Any) -> ImageRecord:
    if not isinstance(item, Mapping):
        raise MalformedImageError(f"an image record is {type(item).__name__}, not an object")
    key = _sha(item.get("sha"))
    if key is None:
        raise MalformedImageError(f"image {str(item.get('imageId'))[:40]!r} has no sha")
    names = [n for e in _list(item.get("repo")) if isinstance(e, Mapping) if (n := _name(e, "tag"))]
    digests = [key]
    for entry in _list(item.get("repoDigests")):
        if isinstance(entry, Mapping) and (d := _sha(entry.get("digest"))):
            digests.append(d)
    counts: dict[str, int] = {}
    vulns = item.get("vulnerabilities")
    if isinstance(vulns, Mapping):
        for level in range(1, 6):
            n = vulns.get(f"severity{level}Count")
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                counts[str(level)] = n
    image_id = _text(item.get("imageId"))
    # PostgreSQL refuses NUL in text: one such record would fail the whole poll's upsert
    if image_id is not None and "\x00" in image_id:
        raise MalformedImageError(f"image {key[:19]}: imageId {NUL_REASON}")
    if any("\x00" in name for name in names):
        raise MalformedImageError(f"image {key[:19]}: a repo name {NUL_REASON}")
    last_scanned = _scanned_at(item.get("lastScanned"), key)
    present = [int(k) for k, v in counts.items() if v > 0]
    return ImageRecord(
        image_key=key,
        image_id=image_id,
        names=tuple(dict.fromkeys(names)),
        digests=tuple(dict.fromkeys(digests)),
        scanned=last_scanned is not None,
        max_severity=max(present) if present else None,
        vulnerabilities=counts,
        last_scanned=last_scanned,
    )

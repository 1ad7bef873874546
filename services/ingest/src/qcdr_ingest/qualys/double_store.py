"""The API double's dataset: findings indexed by time, newest first, with late inserts.

Every record gets an internal time in epoch milliseconds. Records whose ``timestamp`` cannot be
read (the demo data's deliberately malformed ones, or items that are not objects) are filed under
the preceding record's time, so they still come out of some window and totals stay honest; a
real server would not store them at all.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from qcdr_ingest.qualys.normalize import MalformedFindingError, parse_timestamp

_SEVERITY_WORDS = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}


def load_findings(path: Path) -> list[Any]:
    """A JSON array (or ``{"content": [...]}``) or JSON Lines file of findings."""
    data = path.read_bytes()
    if path.suffix == ".jsonl" or not data.lstrip().startswith((b"[", b"{")):
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    loaded = orjson.loads(data)
    if isinstance(loaded, dict) and isinstance(loaded.get("content"), list):
        return list(loaded["content"])
    if not isinstance(loaded, list):
        raise ValueError(f"{path}: expected a JSON array of findings")
    return loaded


def _millis(item: Any) -> int | None:
    if not isinstance(item, dict):
        return None
    try:
        return int(parse_timestamp(item.get("timestamp")).timestamp() * 1000)
    except MalformedFindingError:
        return None


def format_millis(at_ms: int) -> str:
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


def _with_time(item: Any, at_ms: int) -> Any:
    """A copy of ``item`` whose timestamp says ``at_ms``, in the spelling it came with."""
    if not isinstance(item, dict):
        return item
    copy = dict(item)
    copy["timestamp"] = at_ms if isinstance(item.get("timestamp"), int) else format_millis(at_ms)
    return copy


def _severity_number(item: Any) -> int | None:
    value = item.get("severity") if isinstance(item, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isascii() and text.isdigit() else _SEVERITY_WORDS.get(text.upper())
    return None


@dataclass(frozen=True, slots=True)
class _Record:
    neg_ms: int  # negated so that ascending order is newest first
    seq: int  # insertion order: a stable tie-break
    item: Any


class FindingStore:
    """Findings ordered newest first (ties in load order); queries are cached until an insert."""

    def __init__(self, items: Iterable[Any], *, rebase_to: datetime | None = None) -> None:
        raw = list(items)
        times: list[int | None] = [_millis(item) for item in raw]
        known = [t for t in times if t is not None]
        shift = 0
        if rebase_to is not None and known:
            shift = int(rebase_to.timestamp() * 1000) - max(known)
        fallback = (max(known) if known else int(datetime.now(UTC).timestamp() * 1000)) + shift
        records: list[_Record] = []
        for seq, (item, at) in enumerate(zip(raw, times, strict=True)):
            if at is None:
                at_ms = fallback
            else:
                at_ms = fallback = at + shift
                item = _with_time(item, at_ms) if shift else item
            records.append(_Record(-at_ms, seq, item))
        records.sort(key=lambda r: (r.neg_ms, r.seq))
        self._records = records
        self._keys = [r.neg_ms for r in records]
        self._seq = len(records)
        self._cache: dict[tuple[int, int, int | None, str | None], list[Any]] = {}
        self.inserted = 0

    def __len__(self) -> int:
        return len(self._records)

    def take(self, count: int) -> list[Any]:
        """Remove ``count`` well-formed findings, spread over the dataset (held back for inserts)."""
        candidates = [
            r for r in self._records if isinstance(r.item, dict) and isinstance(r.item.get("uuid"), str)
        ]
        if count > len(candidates):
            raise ValueError(f"cannot hold back {count} findings from {len(candidates)}")
        step = len(candidates) / count if count else 0
        chosen = {id(candidates[int(i * step)]) for i in range(count)}
        taken = [r.item for r in self._records if id(r) in chosen]
        self._records = [r for r in self._records if id(r) not in chosen]
        self._keys = [r.neg_ms for r in self._records]
        self._cache.clear()
        return taken

    def query(self, start_ms: int, end_ms: int, severity: int | None, resource_type: str | None) -> list[Any]:
        """Items with ``start_ms <= time <= end_ms`` matching the filters, newest first."""
        key = (start_ms, end_ms, severity, resource_type)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        lo = bisect.bisect_left(self._keys, -end_ms)
        hi = bisect.bisect_right(self._keys, -start_ms)
        items = [r.item for r in self._records[lo:hi]]
        if severity is not None:
            items = [i for i in items if _severity_number(i) == severity]
        if resource_type is not None:
            wanted = resource_type.lower()
            items = [
                i for i in items if isinstance(i, dict) and str(i.get("resourceType", "")).lower() == wanted
            ]
        self._cache[key] = items
        return items

    def time_of(self, item: Any) -> int | None:
        return _millis(item)

    def insert(self, items: Sequence[Any], *, newest_ms: int, oldest_ms: int) -> None:
        """Add ``items`` with times spread strictly inside ``(oldest_ms, newest_ms]``."""
        span = max(newest_ms - oldest_ms, 0)
        for i, item in enumerate(items):
            at_ms = newest_ms - (i * span) // (len(items) + 1) if span > len(items) else newest_ms
            record = _Record(-at_ms, self._seq, _with_time(item, at_ms))
            self._seq += 1
            index = bisect.bisect_right(self._keys, record.neg_ms)
            self._records.insert(index, record)
            self._keys.insert(index, record.neg_ms)
        self.inserted += len(items)
        self._cache.clear()

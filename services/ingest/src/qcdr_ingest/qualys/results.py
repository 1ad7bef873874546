"""What a fetch returns and reports while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TruncatedWindow:
    """A time window that still had more findings than could be read, and could not be split."""

    start: datetime
    end: datetime
    fetched: int
    reported: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """A snapshot passed to the ``progress`` callback after every page."""

    fetched: int
    expected: int | None  # the server's total for the whole range, when it said so
    pages: int
    requests: int
    windows_done: int
    windows_pending: int
    window_start: datetime
    window_end: datetime


@dataclass(slots=True)
class FetchStats:
    """Counters shared by the HTTP layer and the pager while a fetch runs."""

    requests: int = 0
    auth_requests: int = 0
    pages: int = 0
    retries: int = 0
    window_splits: int = 0
    duplicates_dropped: int = 0


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Everything fetched for a time range, and how sure we are that it is everything.

    ``findings`` are the raw objects, unique by uuid, sorted by (timestamp text, uuid) so the order
    does not depend on how windows were split. Items without a usable uuid (or that are not
    objects) are kept apart in ``unidentified`` for the normalizer to count as malformed.
    ``fetched`` counts both. Nothing is dropped silently: shortfalls are in ``truncated_windows``
    and ``warnings``.
    """

    start: datetime
    end: datetime
    findings: list[dict[str, Any]]
    unidentified: list[Any]
    fetched: int
    reported_total: int | None
    pages: int
    requests: int
    auth_requests: int
    window_splits: int
    windows: int
    duplicates_dropped: int
    retries: int
    truncated_windows: list[TruncatedWindow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """No window was truncated and we hold at least what the server reported."""
        if self.truncated_windows:
            return False
        return self.reported_total is None or self.fetched >= self.reported_total

"""Read every finding in a time range from an endpoint whose paging cannot be trusted.

Whether the CDR findings endpoint pages at all is unverified (the original never asked for a
second page), so the pager assumes little:

* it sends ``limit`` plus configurable page parameters and follows ``last`` / ``totalPages`` /
  ``totalElements`` when the server sends them; without any of them a full page means "maybe more";
* a server that ignores the page parameter (the same findings again, or ``number`` not moving) or
  stops returning items while claiming more, or a window larger than the per-window cap, makes it
  **bisect the time window** until each piece fits;
* findings are de-duplicated by uuid, because inserts while paging shift offsets;
* a window whose ``totalElements`` ended up above what was read is read again (late inserts), and a
  final one-request check of the whole range catches inserts into windows already finished.

Windows are whole seconds because the API's ``startAt``/``endAt`` use ``.000Z``/``.999Z``.
Anything that still cannot be read is reported as a truncated window, never dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from qcdr_ingest.qualys.results import FetchProgress, FetchStats, TruncatedWindow


@dataclass(frozen=True, slots=True)
class PageMeta:
    """Spring-style page fields; each is None when the server did not send it."""

    number: int | None = None
    size: int | None = None
    total_elements: int | None = None
    total_pages: int | None = None
    last: bool | None = None
    first: bool | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    meta: PageMeta


class PageFetcher(Protocol):
    async def __call__(self, start_s: int, end_s: int, page: int, limit: int) -> Page:
        """One page of findings between ``start_s``.000 and ``end_s``.999 (epoch seconds)."""
        ...


@dataclass(frozen=True, slots=True)
class PagerOptions:
    limit: int = 200
    page_base: int = 0
    window_cap: int = 10_000
    min_window_s: int = 1
    max_passes: int = 3
    verify_total: bool = True


Key = str | bytes


class Collector:
    """Findings unique by uuid; uuid-less items unique by their canonical JSON."""

    def __init__(self, stats: FetchStats) -> None:
        self._stats = stats
        self.by_uuid: dict[str, dict[str, Any]] = {}
        self.unidentified: dict[bytes, Any] = {}

    def __len__(self) -> int:
        return len(self.by_uuid) + len(self.unidentified)

    def add(self, item: Any) -> Key:
        uuid = item.get("uuid") if isinstance(item, dict) else None
        if isinstance(uuid, str) and uuid.strip():
            key = uuid.strip()
            if key in self.by_uuid:
                self._stats.duplicates_dropped += 1
            # The later copy wins: it reflects the finding as the server knows it now.
            self.by_uuid[key] = item
            return key
        blob = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        if blob in self.unidentified:
            self._stats.duplicates_dropped += 1
        else:
            self.unidentified[blob] = item
        return blob

    def sorted_findings(self) -> list[dict[str, Any]]:
        return sorted(self.by_uuid.values(), key=lambda f: (str(f.get("timestamp", "")), str(f["uuid"])))


@dataclass(slots=True)
class _Window:
    start: int
    end: int
    total: int | None = None
    fetched: int = 0
    passes: int = 0
    seen: set[Key] = field(default_factory=set)

    @property
    def width(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class _Verdict:
    kind: str  # "complete" | "short" | "split"
    reason: str = ""


def _iso(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class WindowPager:
    """Drives one fetch over ``[start_s, end_s]``; results accumulate in ``collector``."""

    def __init__(
        self,
        fetch: PageFetcher,
        options: PagerOptions,
        stats: FetchStats,
        *,
        progress: Callable[[FetchProgress], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._opt = options
        self._stats = stats
        self._progress = progress
        self.collector = Collector(stats)
        self.warnings: list[str] = []
        self.truncated: list[TruncatedWindow] = []
        self.final: list[_Window] = []
        self._pending: list[_Window] = []
        self._paging_ignored = False
        self._page_base = options.page_base
        self._base_fixed = False
        self._expected: int | None = None
        # Beyond this many pages a window cannot be legitimate under the cap: split instead.
        self._max_pages = math.ceil(options.window_cap / options.limit) + 2

    @property
    def reported_total(self) -> int | None:
        totals = [w.total for w in self.final]
        if not totals or any(t is None for t in totals):
            return None
        return sum(t for t in totals if t is not None)

    async def run(
        self, start_s: int, end_s: int, *, verify: Callable[[int, int], Awaitable[int | None]]
    ) -> None:
        self._pending = [_Window(start_s, end_s)]
        await self._drain()
        if not self._opt.verify_total:
            return
        for check in range(3):
            redo = await self._windows_that_grew(verify)
            if not redo:
                return
            if check == 2:
                break
            for w in redo:
                self.final.remove(w)
                self.truncated = [t for t in self.truncated if t.start != _iso(w.start)]
                self._pending.append(_Window(w.start, w.end, seen=w.seen))
            await self._drain()
        self.warnings.append("findings kept arriving in already-read windows; the result may lag behind")

    async def _drain(self) -> None:
        while self._pending:
            await self._window(self._pending.pop())

    async def _window(self, w: _Window) -> None:
        verdict = _Verdict("short")
        while verdict.kind == "short" and w.passes < self._opt.max_passes:
            w.passes += 1
            verdict = await self._page_through(w)
        if verdict.kind == "complete":
            self.final.append(w)
            return
        reason = verdict.reason or f"findings kept arriving while the window was read {w.passes} times"
        if w.width >= 2 * self._opt.min_window_s:
            mid = w.start + w.width // 2 - 1
            # Older half first onto the stack, so the newer half is read next.
            self._pending.append(_Window(w.start, mid))
            self._pending.append(_Window(mid + 1, w.end))
            self._stats.window_splits += 1
            return
        self.final.append(w)
        start, end = _iso(w.start), _iso(w.end)
        self.truncated.append(TruncatedWindow(start, end, w.fetched, w.total, reason))
        self.warnings.append(
            f"window {start.isoformat()}..{end.isoformat()} cannot be split further and is incomplete: "
            f"{reason} (read {w.fetched}, server reports {w.total if w.total is not None else 'unknown'})"
        )

    async def _page_through(self, w: _Window) -> _Verdict:
        opt = self._opt
        page = self._page_base
        seen_this_pass: set[Key] = set()
        prev_number: int | None = None
        first_total: int | None = None
        ordinal = 0
        while True:
            ordinal += 1
            if ordinal > self._max_pages:
                return _Verdict("split", f"more than {self._max_pages} pages in one window")
            result = await self._fetch(w.start, w.end, page, opt.limit)
            self._stats.pages += 1
            meta = result.meta
            if meta.total_elements is not None:
                w.total = meta.total_elements
                first_total = meta.total_elements if first_total is None else first_total
                self._expected = meta.total_elements if self._expected is None else self._expected
            keys = [self.collector.add(item) for item in result.items]
            fresh = len(set(keys) - seen_this_pass)
            seen_this_pass.update(keys)
            w.seen.update(keys)
            w.fetched = len(w.seen)
            self._report(w)

            if ordinal == 1:
                if meta.first is False and page > 0 and self._fix_page_base(page):
                    page, ordinal = self._page_base, 0
                    seen_this_pass.clear()
                    continue
                if w.total is not None and w.total > opt.window_cap and w.width >= 2 * opt.min_window_s:
                    return _Verdict(
                        "split", f"{w.total} findings exceed the per-window cap of {opt.window_cap}"
                    )
            elif (meta.number is not None and meta.number == prev_number) or (keys and fresh * 2 < len(keys)):
                self._note_paging_ignored()
                return _Verdict("split", "the server ignores the page parameter")
            prev_number = meta.number

            if not self._has_more(meta, len(result.items), page):
                break
            if w.passes > 1 and w.total is not None and w.fetched >= w.total:
                break  # a re-read only has to find what the first pass missed
            if not result.items:
                return _Verdict("split", "the server returned an empty page while reporting more")
            if self._paging_ignored:
                return _Verdict("split", "the server ignores the page parameter")
            page += 1
        if w.total is None or w.fetched >= w.total:
            return _Verdict("complete")
        if first_total is not None and w.total > first_total:
            return _Verdict("short")  # findings arrived while we paged: read the window again
        return _Verdict("split", "the server returned fewer findings than it reported")

    def _has_more(self, meta: PageMeta, count: int, page: int) -> bool:
        if meta.last is not None:
            return not meta.last
        read_pages = page - self._page_base + 1
        if meta.total_pages is not None:
            return read_pages < meta.total_pages
        size = meta.size or self._opt.limit
        if meta.total_elements is not None:
            return read_pages * size < meta.total_elements
        return count >= size

    def _fix_page_base(self, page: int) -> bool:
        """The server says our first page is not its first: count pages from one lower, once."""
        if self._base_fixed:
            return False
        self._base_fixed = True
        self._page_base = page - 1
        self.warnings.append(
            f"the server says page {page} is not its first page; counting pages from {page - 1} instead "
            "(set QCDR_QUALYS_PAGE_BASE to match)"
        )
        return True

    def _note_paging_ignored(self) -> None:
        if not self._paging_ignored:
            self._paging_ignored = True
            self.warnings.append(
                "the server ignores paging; falling back to splitting the time range "
                f"until each window fits in one page of {self._opt.limit}"
            )

    async def _windows_that_grew(self, verify: Callable[[int, int], Awaitable[int | None]]) -> list[_Window]:
        """Final windows whose count went up after they were read, found by bisecting groups."""
        if not self.final or any(w.total is None for w in self.final):
            return []
        ordered = sorted(self.final, key=lambda w: w.start)

        async def grew(group: list[_Window]) -> list[_Window]:
            now = await verify(group[0].start, group[-1].end)
            known = sum(w.total or 0 for w in group)
            if now is None or now <= known:
                return []
            if len(group) == 1:
                return group
            half = len(group) // 2
            return await grew(group[:half]) + await grew(group[half:])

        return await grew(ordered)

    def _report(self, w: _Window) -> None:
        if self._progress is None:
            return
        self._progress(
            FetchProgress(
                fetched=len(self.collector),
                expected=self._expected,
                pages=self._stats.pages,
                requests=self._stats.requests,
                windows_done=len(self.final),
                windows_pending=len(self._pending),
                window_start=_iso(w.start),
                window_end=_iso(w.end),
            )
        )

"""Open findings and chains per image and per namespace.

A finding is open from its event time for ``window_s`` (the stream carries no "closed" event; a
later finding with the same id replaces the earlier one), at most ``window_s`` from now, and at most
``max_open`` findings are held. Only findings at or above the minimum
severity are kept. Images are keyed by digest (``sha256:…``) and by normalised name and tag, the
way :mod:`qcdr_admission.policies.image_status` keys them.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Sequence

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding

from qcdr_admission.policies.context import OpenIssue
from qcdr_admission.policies.image_status import name_key
from qcdr_admission.policies.images import InvalidImageReferenceError, parse_image

_RANK = {s: i for i, s in enumerate(Severity)}


class RuntimeState:
    def __init__(
        self,
        *,
        window_s: float,
        min_severity: str = "high",
        max_open: int = 50_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_s = window_s
        self.max_open = max_open
        self.min_rank = _RANK[Severity(min_severity)]
        self.clock = clock
        self.ready = False  # set once the reader has bootstrapped
        self._issues: dict[str, tuple[float, OpenIssue, tuple[str, ...], str | None]] = {}
        self._by_image: dict[str, dict[str, OpenIssue]] = {}
        self._by_namespace: dict[str, dict[str, OpenIssue]] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._issues)

    @staticmethod
    def _image_keys(image: str | None, digest: str | None) -> tuple[str, ...]:
        keys: list[str] = []
        if digest:
            keys.append(digest.lower() if digest.startswith("sha256:") else f"sha256:{digest.lower()}")
        if image:
            try:
                ref = parse_image(image)
            except InvalidImageReferenceError:
                ref = None
            if ref is not None and ref.digest:
                keys.append(ref.digest.lower())
            named = name_key(image) if ref is not None and ref.digest is None else None
            if named:
                keys.append(named)
        return tuple(dict.fromkeys(keys))

    def add(self, finding: Finding) -> None:
        if _RANK[finding.severity] < self.min_rank:
            return
        now = self.clock()
        # open for the window from its event time, but never longer than the window from now: an
        # event stamped in 2199 would otherwise stay open (and in memory) for two centuries
        expires = min(finding.event_time.timestamp(), now) + self.window_s
        if expires <= now:
            return
        self.remove(finding.id)
        kind = finding.kind.value
        issue = OpenIssue(finding.id, kind, finding.severity.value, finding.title or finding.category)
        images = self._image_keys(finding.workload.image, finding.workload.image_digest)
        namespace = finding.workload.namespace
        self._issues[finding.id] = (expires, issue, images, namespace)
        for key in images:
            self._by_image.setdefault(key, {})[finding.id] = issue
        if namespace:
            self._by_namespace.setdefault(namespace, {})[finding.id] = issue
        heapq.heappush(self._expiry, (expires, finding.id))
        if len(self._expiry) > 2 * len(self._issues) + 1024:
            # a finding refreshed again and again leaves one stale entry each time: rebuild
            self._expiry = [(entry[0], fid) for fid, entry in self._issues.items()]
            heapq.heapify(self._expiry)
        while len(self._issues) > self.max_open:  # a flood: the soonest to expire go first
            expires, finding_id = heapq.heappop(self._expiry)
            entry = self._issues.get(finding_id)
            if entry is not None and entry[0] == expires:
                self.remove(finding_id)

    def remove(self, finding_id: str) -> None:
        entry = self._issues.pop(finding_id, None)
        if entry is None:
            return
        _, _, images, namespace = entry
        for key in images:
            bucket = self._by_image.get(key)
            if bucket is not None:
                bucket.pop(finding_id, None)
                if not bucket:
                    del self._by_image[key]
        if namespace:
            bucket = self._by_namespace.get(namespace)
            if bucket is not None:
                bucket.pop(finding_id, None)
                if not bucket:
                    del self._by_namespace[namespace]

    def expire(self, now: float | None = None) -> int:
        """Drop what is past its window; returns how many were dropped."""
        now = self.clock() if now is None else now
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            expires, finding_id = heapq.heappop(self._expiry)
            entry = self._issues.get(finding_id)
            if entry is not None and entry[0] == expires:
                self.remove(finding_id)
                dropped += 1
        return dropped

    # --- RuntimeView
    def for_image(self, image: str) -> Sequence[OpenIssue]:
        found: dict[str, OpenIssue] = {}
        for key in self._image_keys(image, None):
            found.update(self._by_image.get(key, {}))
        return self._open(found.values())

    def for_namespace(self, namespace: str) -> Sequence[OpenIssue]:
        return self._open(self._by_namespace.get(namespace, {}).values())

    def _open(self, issues: Iterable[OpenIssue]) -> Sequence[OpenIssue]:
        now = self.clock()
        out = [i for i in issues if self._issues[i.id][0] > now]
        out.sort(key=lambda i: (-_RANK[Severity(i.severity)], i.kind != "chain", i.id))
        return out

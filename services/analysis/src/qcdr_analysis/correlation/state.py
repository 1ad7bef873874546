"""What the correlation engine remembers, and how it is saved and restored.

:class:`EngineState` holds the state (partial chains, the event-time buffer, the ids seen within
the lateness horizon, exec ancestry, pod addresses, watermarks) and turns it into JSON-able
snapshots and per-batch deltas; :class:`~qcdr_analysis.correlation.engine.Engine` adds the
matching on top. Split so the matching reads on its own and the checkpoint format sits in one place.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qcdr_analysis.correlation.chains import Hit, hit_from_json, hit_json
from qcdr_analysis.correlation.items import Item
from qcdr_analysis.correlation.patterns import Pattern

SNAPSHOT_VERSION = 1


@dataclass(slots=True)
class Partial:
    key: str
    start: float
    hits: list[Hit]

    @property
    def first_event(self) -> str:
        return self.hits[0].event_id

    def uses(self, evidence: tuple[str, ...]) -> bool:
        return any(e in hit.evidence for hit in self.hits for e in evidence)


@dataclass(slots=True)
class Compiled:
    """A loaded pattern with what matching reads on every item, precomputed."""

    pattern: Pattern
    maxspan: float
    lateness: float
    nsteps: int
    digest: str  # of the pattern's definition: a changed pattern's saved state is dropped
    distinct: bool  # distinct_clusters


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class EngineState:
    """The engine's mutable state; subclasses set ``_compiled`` and ``_by_name`` before ``_reset``."""

    _compiled: list[Compiled]
    _by_name: dict[str, int]

    def _reset(self) -> None:
        self._future_limit = math.inf
        self._now = -math.inf
        self._watermark = -math.inf
        # (source, cluster) -> [latest event time, wall time of its latest delivery]
        self._marks: dict[str, list[float]] = {}
        self._released = -math.inf
        self._seq = itertools.count()
        self._buffer: list[tuple[float, int, Item, tuple[tuple[int, int], ...]]] = []
        # the same entries by item id: a checkpoint writes the changed ones without scanning the
        # buffer, which holds every matching item of the last ``lateness`` seconds
        self._buffered: dict[str, tuple[Item, tuple[tuple[int, int], ...]]] = {}
        self._seen: dict[str, float] = {}
        self._seen_heap: list[tuple[float, str]] = []
        self._partials: dict[tuple[int, str], list[Partial | None]] = {}
        self._expiry: list[tuple[float, int, str]] = []
        self._parents: dict[str, str] = {}
        self._addresses: dict[str, str] = {}  # cluster/namespace/pod -> address
        self._addresses_changed: set[str] = set()
        # what changed since the last checkpoint: partial keys, buffered and seen item ids
        self._dirty: set[tuple[int, str]] = set()
        self._buffer_changed: set[str] = set()
        self._seen_changed: set[str] = set()

    # ------------------------------------------------------------------ introspection

    @property
    def buffered(self) -> int:
        """Items waiting for the watermark to pass them by the lateness."""
        return len(self._buffer)

    @property
    def live_keys(self) -> int:
        return len(self._partials)

    def partials(self) -> list[dict[str, Any]]:
        """Partial chains, most advanced first (what ``GET /v1/chains?state=partial`` shows)."""
        views = []
        for (p, key), slots in self._partials.items():
            c = self._compiled[p]
            for partial in slots:
                if partial is None:
                    continue
                done = len(partial.hits)
                views.append(
                    {
                        "pattern": c.pattern.name,
                        "join": {"key": c.pattern.join.value, "value": key},
                        "first_event_id": partial.first_event,
                        "steps": [
                            {
                                "name": h.step,
                                "event_id": h.event_id,
                                "event_time": iso(h.time),
                                "cluster": h.workload.get("cluster"),
                            }
                            for h in partial.hits
                        ],
                        "next_step": c.pattern.steps[done].name,
                        "progress": f"{done}/{c.nsteps}",
                        "started_at": iso(partial.start),
                        "expires_at": iso(partial.start + c.maxspan),
                    }
                )
        views.sort(key=lambda v: (-len(v["steps"]), v["started_at"]))
        return views

    # ------------------------------------------------------------------ checkpoints

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data (the next :meth:`checkpoint` is relative to it)."""
        self._clear_changes()
        return self._state(list(self._partials), None, None, None)

    def checkpoint(self) -> dict[str, Any]:
        """What changed since the last checkpoint or snapshot. ``partials``, ``buffer``, ``seen``
        and ``addresses`` hold only changed entries (``None``: removed); the rest is small and
        always whole. Store the four as Redis hashes (HSET the entries, HDEL the ``None`` ones) and
        the rest as one value, in the batch's MULTI; a restore reads them back into one snapshot
        (each of the four = its whole hash). Cost is proportional to what the batch changed, not
        to state."""
        changes = (
            list(self._dirty),
            set(self._buffer_changed),
            set(self._seen_changed),
            set(self._addresses_changed),
        )
        self._clear_changes()
        return self._state(*changes)

    def _clear_changes(self) -> None:
        self._dirty.clear()
        self._buffer_changed.clear()
        self._seen_changed.clear()
        self._addresses_changed.clear()

    def _state(
        self,
        keys: list[tuple[int, str]],
        buffer_ids: set[str] | None,
        seen_ids: set[str] | None,
        address_ids: set[str] | None,
    ) -> dict[str, Any]:
        """Full state, or (with the changed ids) a delta where ``None`` marks a removed entry."""
        name = [c.pattern.name for c in self._compiled]
        buffer: dict[str, Any] = {}
        for uid in self._buffered if buffer_ids is None else buffer_ids:
            entry = self._buffered.get(uid)
            buffer[uid] = (
                None
                if entry is None
                else {"item": entry[0].to_json(), "targets": [[name[p], s] for p, s in entry[1]]}
            )
        if seen_ids is None:
            seen: dict[str, float | None] = dict(self._seen)
        else:
            seen = {uid: self._seen.get(uid) for uid in seen_ids}
        if address_ids is None:
            addresses: dict[str, str | None] = dict(self._addresses)
        else:
            addresses = {pod: self._addresses.get(pod) for pod in address_ids}
        partials: dict[str, list[dict[str, Any]] | None] = {}
        for p, key in keys:
            slots = self._partials.get((p, key))
            partials[f"{name[p]}\x1f{key}"] = (
                None
                if slots is None
                else [
                    {"stage": i, "start": s.start, "hits": [hit_json(h) for h in s.hits]}
                    for i, s in enumerate(slots)
                    if s is not None
                ]
            )
        return {
            "version": SNAPSHOT_VERSION,
            "patterns": {c.pattern.name: c.digest for c in self._compiled},
            "watermark": None if self._watermark == -math.inf else self._watermark,
            "released": None if self._released == -math.inf else self._released,
            "marks": {k: list(v) for k, v in self._marks.items()},
            "buffer": buffer,
            "seen": seen,
            "partials": partials,
            "parents": list(self._parents.items()),
            "addresses": addresses,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with ``snapshot``; state of patterns that changed since is dropped."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported correlation snapshot version {snapshot.get('version')!r}")
        self._reset()
        same = {
            n: self._by_name[n]
            for n, d in snapshot["patterns"].items()
            if n in self._by_name and self._compiled[self._by_name[n]].digest == d
        }
        self._watermark = -math.inf if snapshot["watermark"] is None else snapshot["watermark"]
        self._released = -math.inf if snapshot["released"] is None else snapshot["released"]
        self._marks = {k: [float(v[0]), float(v[1])] for k, v in (snapshot.get("marks") or {}).items()}
        for uid, t in snapshot["seen"].items():
            if t is None:
                continue
            self._seen[uid] = t
            self._seen_heap.append((t, uid))
        heapq.heapify(self._seen_heap)
        for entry in snapshot["buffer"].values():
            if entry is None:
                continue
            targets = tuple((same[n], s) for n, s in entry["targets"] if n in same)
            if targets:
                item = Item.from_json(entry["item"])
                self._buffer.append((item.time, next(self._seq), item, targets))
                self._buffered[item.uid] = (item, targets)
        heapq.heapify(self._buffer)
        for field_name, entries in snapshot["partials"].items():
            pattern, _, key = field_name.partition("\x1f")
            if pattern not in same or not entries:
                continue
            p = same[pattern]
            c = self._compiled[p]
            slots = self._partials.setdefault((p, key), [None] * (c.nsteps - 1))
            for entry in entries:
                hits = [hit_from_json(h) for h in entry["hits"]]
                slots[entry["stage"]] = Partial(key=key, start=entry["start"], hits=hits)
            heapq.heappush(self._expiry, (min(e["start"] for e in entries) + c.maxspan, p, key))
        self._parents = dict(snapshot["parents"])
        # absent in snapshots from before peer joins
        self._addresses = {pod: ip for pod, ip in (snapshot.get("addresses") or {}).items() if ip}

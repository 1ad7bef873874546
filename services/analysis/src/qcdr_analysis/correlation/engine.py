"""The in-memory correlation engine: ordered, windowed, keyed step matching over micro-batches.

Semantics (issue 6, item 1):

* **Event-time order with allowed lateness.** The watermark ``W`` is the latest event time fed so
  far. Items that match some step wait in a buffer and are processed in event-time order once
  ``W`` has passed them by the largest lateness of the loaded patterns; an item older than
  ``W - lateness`` of its pattern (or older than what was already processed) arrives too late and
  is dropped (``stats.late``), so a step can never be slotted in before one already taken.
  :meth:`Engine.flush` processes the buffer now (end of a replay, or an idle stream).
* **Steps in order, each once.** A partial chain at stage *k* advances only with an item matching
  step *k+1* whose event time is not before step *k*'s; an item advances a given chain at most
  once and never with an event already in it. Per pattern and join key the engine keeps at most
  one partial per stage, the latest (EQL's rule): a newer start replaces an older one, which
  bounds state by keys x steps instead of by events.
* **Sources that lag** (``source_idle_s``, off by default). One watermark for everything makes a
  source that delivers in batches late by construction: the Qualys poller's detections arrive
  minutes old beside live Tetragon events, and a spoke catching up at the hub arrives behind the
  others. With ``source_idle_s`` set, each (source, cluster) keeps its own watermark and ``W`` is
  the lowest of those that delivered within the last ``source_idle_s`` seconds of wall time (the
  highest overall when none did), as Flink combines its inputs' watermarks with an idleness
  timeout. The price: every chain waits for the slowest active source, so set the timeout just
  above the slowest source's delivery interval (the poller's, plus its latency).
* **Clocks ahead.** An item more than ``max_future_s`` (300 s) ahead of this process's clock is
  dropped (``stats.future``): one event from a node with a clock set years ahead would otherwise
  push ``W`` there and make every later event late.
* **Windows.** A partial expires when event time passes its first step + ``maxspan``;
  ``until`` clears the key's partials.
* **Redelivery.** An item id seen within the lateness horizon is ignored (``stats.duplicates``);
  anything older is late anyway. Together with the snapshot this makes ``restore`` + re-feeding
  the same events emit nothing twice.
* **Cross-cluster patterns** (``distinct_clusters``): a step advances a partial only with an
  item from a cluster none of the partial's hits came from (the hits keep their workload, cluster
  included, so checkpoints need no new field); an item without a cluster takes no part. Patterns
  without the option pay one boolean test per candidate partial.
* **Lateral movement** (``join: peer``): a chain starts under the first step's destination
  address and continues with items of the workload at that address. An item knows its own
  address when its event shows it (the source of a Tetragon connection, of a Hubble DNS query);
  the engine also remembers the latest address seen per pod (``address_cache`` pods, kept in the
  checkpoint), so the pod's process executions, which carry no address, continue the chain too.
  Without ``distinct_clusters`` the address is scoped by cluster (pod-to-pod within one cluster:
  10.0.1.5 in two clusters are two pods); with it, addresses must be unique across the clusters
  (Cilium Cluster Mesh's rule).
* **Output.** Only complete chains become findings (``kind=chain``, ``category=chain.<pattern>``);
  the finding id hashes pattern + join key + first step's event id (the natural key), so a chain
  re-emitted after a crash between emit and checkpoint is a duplicate the findings table rejects.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding

from qcdr_analysis.correlation.chains import Hit, chain_finding, hit_from_json, hit_json
from qcdr_analysis.correlation.items import Item, items, join_candidates, start_key
from qcdr_analysis.correlation.matching import build_index
from qcdr_analysis.correlation.patterns import JoinKey, Pattern

SNAPSHOT_VERSION = 1
_ANCESTRY_DEPTH = 16


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
class Stats:
    events: int = 0  # events and standalone findings fed
    matched: int = 0  # items that matched at least one step
    late: int = 0
    future: int = 0  # dropped: event time too far ahead of this process's clock
    duplicates: int = 0
    expired: int = 0
    chains: int = 0


@dataclass(slots=True)
class _Compiled:
    pattern: Pattern
    maxspan: float
    lateness: float
    nsteps: int
    digest: str
    distinct: bool  # distinct_clusters


def _digest(pattern: Pattern) -> str:
    return hashlib.sha256(pattern.model_dump_json().encode()).hexdigest()[:16]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _workload(item: Item) -> dict[str, str]:
    fields = ("cluster", "namespace", "pod", "container", "container_id", "image_digest")
    return {f: getattr(item, f) for f in fields if getattr(item, f)}


@dataclass
class Engine:
    patterns: Sequence[Pattern]
    parent_cache: int = 100_000  # exec_id -> parent links kept for ancestry joins
    address_cache: int = 50_000  # pod -> its latest own address, for peer joins
    stats: Stats = field(default_factory=Stats)
    max_future_s: float = 300.0  # items further ahead of ``clock`` than this are dropped
    clock: Callable[[], float] = time.time
    # None: one watermark; seconds: per (source, cluster), idle ones left out (module docstring)
    source_idle_s: float | None = None

    def __post_init__(self) -> None:
        self._compiled = [
            _Compiled(
                p,
                p.maxspan.total_seconds(),
                p.lateness.total_seconds(),
                len(p.steps),
                _digest(p),
                p.distinct_clusters,
            )
            for p in self.patterns
        ]
        self._by_name = {c.pattern.name: i for i, c in enumerate(self._compiled)}
        self._index = build_index(list(self.patterns))
        self._lateness = max((c.lateness for c in self._compiled), default=0.0)
        self._ancestry = any(p.join is JoinKey.EXEC for p in self.patterns)
        self._peer = any(p.join is JoinKey.PEER for p in self.patterns)
        self._reset()

    def _reset(self) -> None:
        self._future_limit = math.inf
        self._now = -math.inf
        self._watermark = -math.inf
        # (source, cluster) -> [latest event time, wall time of its latest delivery]
        self._marks: dict[str, list[float]] = {}
        self._released = -math.inf
        self._seq = itertools.count()
        self._buffer: list[tuple[float, int, Item, tuple[tuple[int, int], ...]]] = []
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

    # ------------------------------------------------------------------ input

    def feed(self, events: Sequence[SecurityEvent], findings: Sequence[Finding] = ()) -> list[Finding]:
        """Match one micro-batch; returns the chains it completed (usually none)."""
        self._now = self.clock()
        self._future_limit = self._now + self.max_future_s
        # per-source watermarks: lateness is judged against W as the batch found it (the lowest
        # active source's), computed once per batch rather than once per item
        before = None if self.source_idle_s is None else self._effective()
        for item in items(events, findings):
            self._ingest(item, before)
        return self._release(self._effective() - self._lateness)

    def _effective(self) -> float:
        """``W``: the latest event time, or with ``source_idle_s`` the lowest of the sources that
        delivered within it (idle sources are forgotten: they count again when they deliver)."""
        if self.source_idle_s is None:
            return self._watermark
        horizon = self._now - self.source_idle_s
        idle = [k for k, (_, seen) in self._marks.items() if seen < horizon]
        for key in idle:
            del self._marks[key]
        return min((t for t, _ in self._marks.values()), default=self._watermark)

    def flush(self) -> list[Finding]:
        """Process every buffered item now; anything older that arrives later is late."""
        return self._release(math.inf)

    def _ingest(self, item: Item, before: float | None = None) -> None:
        self.stats.events += 1
        t = item.time
        if t > self._future_limit:
            self.stats.future += 1
            return
        if self._ancestry and item.exec_id and item.parent_exec_id:
            self._remember_parent(item.exec_id, item.parent_exec_id)
        if self._peer and item.own_ip and item.pod:
            self._remember_address(f"{item.cluster}/{item.namespace}/{item.pod}", item.own_ip)
        previous = self._watermark if before is None else before
        if t > self._watermark:
            self._watermark = t
        if self.source_idle_s is not None:
            mark = self._marks.get(key := f"{item.source}\x1f{item.cluster}")
            if mark is None:
                self._marks[key] = [t, self._now]
            else:
                mark[0] = max(mark[0], t)
                mark[1] = self._now
        targets = [x for x in self._index.candidates(item) if x.test(item)]
        if not targets:
            return
        self.stats.matched += 1
        if item.uid in self._seen:
            self.stats.duplicates += 1
            return
        timely = tuple(
            (x.pattern, x.step)
            for x in targets
            if t >= max(previous - self._compiled[x.pattern].lateness, self._released)
        )
        if not timely:
            self.stats.late += 1
            return
        self._seen[item.uid] = t
        self._seen_changed.add(item.uid)
        self._buffer_changed.add(item.uid)
        heapq.heappush(self._seen_heap, (t, item.uid))
        heapq.heappush(self._buffer, (t, next(self._seq), item, timely))

    def _remember_parent(self, exec_id: str, parent: str) -> None:
        if exec_id not in self._parents and len(self._parents) >= self.parent_cache:
            del self._parents[next(iter(self._parents))]  # oldest first: dicts keep insertion order
        self._parents[exec_id] = parent

    def _remember_address(self, pod: str, address: str) -> None:
        if self._addresses.get(pod) == address:
            return
        self._addresses.pop(pod, None)  # re-inserted last: the newest stays longest
        if len(self._addresses) >= self.address_cache:
            oldest = next(iter(self._addresses))
            del self._addresses[oldest]
            self._addresses_changed.add(oldest)
        self._addresses[pod] = address
        self._addresses_changed.add(pod)

    # ------------------------------------------------------------------ processing

    def _release(self, upto: float) -> list[Finding]:
        out: list[Finding] = []
        while self._buffer and self._buffer[0][0] <= upto:
            t, _, item, targets = heapq.heappop(self._buffer)
            self._buffer_changed.add(item.uid)
            self._released = max(self._released, t)
            self._expire(t)
            out.extend(self._process(item, targets))
        horizon = self._effective() - self._lateness
        while self._seen_heap and self._seen_heap[0][0] < min(horizon, self._released):
            _, uid = heapq.heappop(self._seen_heap)
            self._seen.pop(uid, None)
            self._seen_changed.add(uid)
        return out

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, p, key = heapq.heappop(self._expiry)
            slots = self._partials.get((p, key))
            if slots is None:
                continue
            self._dirty.add((p, key))
            maxspan = self._compiled[p].maxspan
            for i, partial in enumerate(slots):
                if partial is not None and partial.start + maxspan < now:
                    slots[i] = None
                    self.stats.expired += 1
            self._tidy(p, key, slots)

    def _tidy(self, p: int, key: str, slots: list[Partial | None]) -> None:
        alive = [s.start for s in slots if s is not None]
        if not alive:
            del self._partials[(p, key)]
        else:
            heapq.heappush(self._expiry, (min(alive) + self._compiled[p].maxspan, p, key))

    def _keys(self, item: Item, join: JoinKey) -> tuple[str, ...]:
        keys = join_candidates(item, join)
        if join is JoinKey.EXEC and item.parent_exec_id:
            found = list(keys)
            current = item.ancestors[-1] if item.ancestors else item.parent_exec_id
            for _ in range(_ANCESTRY_DEPTH):
                nxt = self._parents.get(current)
                if nxt is None or nxt in found:
                    break
                found.append(nxt)
                current = nxt
            keys = tuple(found)
        if join is JoinKey.PEER and not keys and item.pod:
            learned = self._addresses.get(f"{item.cluster}/{item.namespace}/{item.pod}")
            keys = (learned,) if learned else ()
        return keys

    def _process(self, item: Item, targets: tuple[tuple[int, int], ...]) -> list[Finding]:
        out: list[Finding] = []
        steps_by_pattern: dict[int, set[int]] = {}
        for p, s in targets:
            steps_by_pattern.setdefault(p, set()).add(s)
        for p, steps in steps_by_pattern.items():
            c = self._compiled[p]
            if c.distinct and not item.cluster:
                continue  # cannot tell its cluster from the others'
            keys = self._keys(item, c.pattern.join)
            start = start_key(item, c.pattern.join, keys) if 0 in steps else None
            if c.pattern.join is JoinKey.PEER and not c.distinct:
                # within one cluster: the same private address in two clusters is two pods
                keys = tuple(f"{item.cluster}/{k}" for k in keys)
                start = f"{item.cluster}/{start}" if start is not None else None
            if not keys and start is None:
                continue
            if -1 in steps:  # until: the attack path is broken for these keys
                for key in keys:
                    if self._partials.pop((p, key), None) is not None:
                        self._dirty.add((p, key))
            for key in keys:
                slots = self._partials.get((p, key))
                if slots is not None:
                    out.extend(self._advance(c, p, key, slots, item, steps))
            if start is not None:
                self._start(c, p, start, item)
        return out

    def _hit(self, c: _Compiled, step: int, item: Item) -> Hit:
        return Hit(
            step=c.pattern.steps[step].name,
            event_id=item.evidence[0],
            time=item.time,
            techniques=item.techniques,
            evidence=item.evidence,
            severity=item.severity,
            source=item.source,
            finding_ids=item.finding_ids,
            workload=_workload(item),
        )

    def _advance(
        self, c: _Compiled, p: int, key: str, slots: list[Partial | None], item: Item, steps: set[int]
    ) -> list[Finding]:
        out: list[Finding] = []
        self._dirty.add((p, key))
        for stage in range(len(slots) - 1, -1, -1):  # most advanced first: one step per event
            partial = slots[stage]
            nxt = stage + 1
            if partial is None or nxt not in steps:
                continue
            if item.time < partial.hits[-1].time or item.time - partial.start > c.maxspan:
                continue
            if partial.uses(item.evidence):
                continue
            if c.distinct and any(hit.workload.get("cluster") == item.cluster for hit in partial.hits):
                continue
            partial.hits.append(self._hit(c, nxt, item))
            slots[stage] = None
            if nxt == c.nsteps - 1:
                self.stats.chains += 1
                out.append(chain_finding(c.pattern, key, partial.hits, c.maxspan))
            else:
                slots[nxt] = partial
        if all(s is None for s in slots):
            del self._partials[(p, key)]
        return out

    def _start(self, c: _Compiled, p: int, key: str, item: Item) -> None:
        slots = self._partials.get((p, key))
        if slots is None:
            slots = self._partials[(p, key)] = [None] * (c.nsteps - 1)
        self._dirty.add((p, key))
        slots[0] = Partial(key=key, start=item.time, hits=[self._hit(c, 0, item)])
        heapq.heappush(self._expiry, (item.time + c.maxspan, p, key))

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
                                "event_time": _iso(h.time),
                                "cluster": h.workload.get("cluster"),
                            }
                            for h in partial.hits
                        ],
                        "next_step": c.pattern.steps[done].name,
                        "progress": f"{done}/{c.nsteps}",
                        "started_at": _iso(partial.start),
                        "expires_at": _iso(partial.start + c.maxspan),
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
        if buffer_ids is None or buffer_ids:
            buffer = dict.fromkeys(buffer_ids or ())
            for _, _, item, targets in self._buffer:
                if buffer_ids is None or item.uid in buffer_ids:
                    buffer[item.uid] = {
                        "item": item.to_json(),
                        "targets": [[name[p], s] for p, s in targets],
                    }
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


__all__ = ["Engine", "Hit", "Partial", "Stats"]

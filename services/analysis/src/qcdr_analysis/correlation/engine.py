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
  above the slowest source's delivery interval (the poller's, plus its latency). ``W`` trails the
  newest event by ``source_max_lag_s`` (3,600 s) at most: a source that keeps delivering the same
  old time (a stuck spoke, or one feeding invented clusters) would otherwise hold every chain, and
  the buffer with its checkpoint, for as long as it keeps delivering.
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
  address when its event shows it (the source of a Tetragon connection, of a Hubble DNS query or
  flow); the engine also remembers the latest address seen per pod (``address_cache`` pods, kept
  in the checkpoint), so the pod's process executions, which carry no address, continue the chain
  too. A Hubble flow names the pod at its destination as well, so the reached pod's address is
  known before that pod has said anything.
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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding

from qcdr_analysis.correlation.chains import Hit, chain_finding
from qcdr_analysis.correlation.items import Item, items, join_candidates, start_key
from qcdr_analysis.correlation.matching import build_index
from qcdr_analysis.correlation.patterns import JoinKey, Pattern
from qcdr_analysis.correlation.state import Compiled, EngineState, Partial

_ANCESTRY_DEPTH = 16


@dataclass(slots=True)
class Stats:
    events: int = 0  # events and standalone findings fed
    matched: int = 0  # items that matched at least one step
    late: int = 0
    future: int = 0  # dropped: event time too far ahead of this process's clock
    duplicates: int = 0
    expired: int = 0
    chains: int = 0


def _digest(pattern: Pattern) -> str:
    return hashlib.sha256(pattern.model_dump_json().encode()).hexdigest()[:16]


def _workload(item: Item) -> dict[str, str]:
    fields = ("cluster", "namespace", "pod", "container", "container_id", "image_digest")
    return {f: getattr(item, f) for f in fields if getattr(item, f)}


@dataclass
class Engine(EngineState):
    patterns: Sequence[Pattern]
    parent_cache: int = 100_000  # exec_id -> parent links kept for ancestry joins
    address_cache: int = 50_000  # pod -> its latest own address, for peer joins
    stats: Stats = field(default_factory=Stats)
    max_future_s: float = 300.0  # items further ahead of ``clock`` than this are dropped
    clock: Callable[[], float] = time.time
    # None: one watermark; seconds: per (source, cluster), idle ones left out (module docstring)
    source_idle_s: float | None = None
    source_max_lag_s: float = 3600.0  # how far the lowest source may hold W behind the newest time

    def __post_init__(self) -> None:
        self._compiled = [
            Compiled(
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
        lowest = min((t for t, _ in self._marks.values()), default=self._watermark)
        return max(lowest, self._watermark - self.source_max_lag_s)

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
        if self._peer:
            if item.own_ip and item.pod:
                self._remember_address(f"{item.cluster}/{item.namespace}/{item.pod}", item.own_ip)
            if item.peer_pod:
                self._remember_address(item.peer_pod, item.dest_ip)
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
        self._buffered[item.uid] = (item, timely)

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
            self._buffered.pop(item.uid, None)
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

    def _hit(self, c: Compiled, step: int, item: Item) -> Hit:
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
        self, c: Compiled, p: int, key: str, slots: list[Partial | None], item: Item, steps: set[int]
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

    def _start(self, c: Compiled, p: int, key: str, item: Item) -> None:
        slots = self._partials.get((p, key))
        if slots is None:
            slots = self._partials[(p, key)] = [None] * (c.nsteps - 1)
        self._dirty.add((p, key))
        slots[0] = Partial(key=key, start=item.time, hits=[self._hit(c, 0, item)])
        heapq.heappush(self._expiry, (item.time + c.maxspan, p, key))


__all__ = ["Engine", "Hit", "Partial", "Stats"]

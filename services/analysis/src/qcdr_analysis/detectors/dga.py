"""``dga``: DNS queries (``dns_query`` events from ingest's ``dns`` and ``hubble`` adapters) scored
by the lexical DGA classifier and aggregated per pod (:mod:`qcdr_analysis.dns.tracker`), so one
odd name pages nobody and a pod walking a generated list does, including a list of names that each
look real but are variants of one seed.

The classifier and its word list load on the first DNS query, not at start: most deployments
see no DNS events until a DNS source is configured. The per-pod windows live in memory; a restart
forgets at most one window (10 minutes) of scores, never a raised finding (those are stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import Field
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis.detectors import Detector, DetectorConfig, register
from qcdr_analysis.dns.tracker import PodDgaTracker, Query, TrackerConfig

NAME = "dga"
DNS_CATEGORY = "dns_query"
NXDOMAIN = ("NXDOMAIN", 3, "3")


class Config(DetectorConfig):
    window: timedelta = Field(default=timedelta(minutes=10), description="Per-pod aggregation window.")
    min_distinct: int = Field(default=3, ge=1, description="Distinct DGA-looking domains that raise.")
    nxdomain_ratio: float = Field(default=0.5, gt=0, le=1)
    nxdomain_min_queries: int = Field(default=20, ge=1)
    min_siblings: int = Field(
        default=3,
        ge=2,
        description="Distinct registered domains from one seed (koreasys0.com, koreasys1.com) that raise.",
    )
    max_pods: int = Field(
        default=50_000,
        ge=100,
        description="Pods tracked at most (the least recently active leave first; a pod quiet for a "
        "window leaves anyway).",
    )


@dataclass
class State:
    config: Config
    tracker: PodDgaTracker | None = None

    def get_tracker(self) -> PodDgaTracker:
        if self.tracker is None:
            self.tracker = PodDgaTracker(
                TrackerConfig(
                    window=self.config.window,
                    min_distinct=self.config.min_distinct,
                    nxdomain_ratio=self.config.nxdomain_ratio,
                    nxdomain_min_queries=self.config.nxdomain_min_queries,
                    min_siblings=self.config.min_siblings,
                    max_pods=self.config.max_pods,
                )
            )
        return self.tracker


def setup(config: Config) -> State:
    return State(config)


def _nxdomain(raw: dict[str, Any]) -> bool:
    if raw.get("rcode") in NXDOMAIN:
        return True
    flow = raw.get("flow")
    if isinstance(flow, dict):
        dns = (flow.get("l7") or {}).get("dns") if isinstance(flow.get("l7"), dict) else None
        return isinstance(dns, dict) and dns.get("rcode") in NXDOMAIN
    return False


def detect(events: Sequence[SecurityEvent], state: State, _lookup: object = None) -> list[Finding]:
    queries = [
        Query(
            domain=e.network.domain,
            event_time=e.event_time,
            workload=e.workload,
            nxdomain=_nxdomain(e.raw),
            event_id=e.id,
        )
        for e in events
        if e.category == DNS_CATEGORY and e.network is not None and e.network.domain
    ]
    if not queries:
        return []
    return state.get_tracker().observe(queries)


DETECTOR = register(Detector(name=NAME, kind=FindingKind.DGA, config=Config, setup=setup, detect=detect))

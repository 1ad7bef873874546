"""Output messages for the SIEM sink tests (Splunk HEC, Elasticsearch, syslog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_response.outputs.message import OutputMessage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = count(1)


def make_finding(**overrides: Any) -> Finding:
    """A Falco-like nmap-in-a-container finding in namespace ``payments`` (override anything)."""
    n = next(_ids)
    data: dict[str, Any] = {
        "id": f"finding-{n:06d}",
        "kind": "source",
        "detector": "falco",
        "category": "Network_Scanning_Utility",
        "severity": "high",
        "techniques": ["T1046"],
        "title": "nmap run in a container",
        "explanation": "nmap scanned 10.0.0.0/24 from the api container",
        "event_time": T0,
        "evidence_event_ids": [f"event-{n}"],
        "workload": {"cluster": "prod-eu", "namespace": "payments", "pod": "api-7d9f-x2", "container": "api"},
        "process": {"name": "nmap", "path": "/usr/bin/nmap"},
        "network": {"ip": "10.0.0.7", "port": 443},
        "source": "falco",
    }
    for key, value in overrides.items():
        if key in {"namespace", "pod", "container", "cluster"}:
            data["workload"] = {**data["workload"], key: value}
        else:
            data[key] = value
    return Finding.model_validate(data)


def make_message(finding: Finding | None = None, **overrides: Any) -> OutputMessage:
    finding = finding or make_finding()
    n = next(_ids)
    data: dict[str, Any] = {
        "id": f"dlv-{n:06d}",
        "sink": "siem",
        "group_key": f"{finding.category}/{finding.workload.namespace}",
        "count": 1,
        "finding": finding,
        "finding_ids": (finding.id,),
        "first_seen": finding.event_time,
        "last_seen": finding.event_time + timedelta(seconds=30),
        "cluster_id": "prod-eu",
        "created_at": finding.event_time + timedelta(seconds=31),
    }
    data.update(overrides)
    return OutputMessage.model_validate(data)


def make_messages(n: int, **overrides: Any) -> list[OutputMessage]:
    return [make_message(**overrides) for _ in range(n)]

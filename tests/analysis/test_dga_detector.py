"""The ``dga`` detector on ``dns_query`` events as ingest's ``dns`` adapter makes them: a pod
walking generated names raises one finding; normal names, or one odd name, raise nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from qcdr_analysis.detectors import dga
from qcdr_common.contracts.findings.v1 import FindingKind
from qcdr_ingest.dns.queries import convert_dns

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RANDOM = ["xjq7kz0vbtw3.com", "qpzk4rvx9mtl.net", "vbx8wq2jzkpr.org", "zkq9xw3vbjtm.info", "mwx2qz8kvbjr.biz"]
NORMAL = ["github.com", "api.stripe.com", "storage.googleapis.com", "registry.npmjs.org", "pypi.org"]


def query(name: str, seconds: float, pod: str = "api-7d4b9c-x1", rcode: str = "NXDOMAIN") -> Any:
    return convert_dns(
        {
            "time": (T0 + timedelta(seconds=seconds)).isoformat(),
            "query": name,
            "type": "A",
            "rcode": rcode,
            "workload": {"namespace": "shop", "pod": pod},
        },
        "prod",
    )


def test_a_pod_walking_generated_names_raises_one_finding() -> None:
    state = dga.setup(dga.Config())
    events = [query(name, i * 5) for i, name in enumerate(RANDOM)]
    findings = dga.detect(events, state)
    assert len(findings) == 1
    (finding,) = findings
    assert finding.kind is FindingKind.DGA
    assert finding.category == "dns.dga"
    assert "T1568.002" in finding.techniques
    assert finding.workload.pod == "api-7d4b9c-x1"
    assert set(finding.evidence_event_ids) <= {e.id for e in events}
    assert finding.explanation
    # the same pod keeps going inside the window: quiet, no second page
    assert dga.detect([query(n, 40 + i) for i, n in enumerate(RANDOM)], state) == []


def test_normal_names_and_a_single_odd_one_raise_nothing() -> None:
    state = dga.setup(dga.Config())
    events = [query(name, i, pod="web-1", rcode="NOERROR") for i, name in enumerate(NORMAL * 4)]
    events.append(query(RANDOM[0], 30, pod="web-1"))
    assert dga.detect(events, state) == []


def test_other_events_do_not_load_the_model() -> None:
    state = dga.setup(dga.Config())
    assert dga.detect([], state) == []
    assert state.tracker is None

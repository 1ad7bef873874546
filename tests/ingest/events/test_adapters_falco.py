"""The Falco adapter: the real alert sample, and alerts built from every real rule's output."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from qcdr_common.contracts.events.v1 import Severity
from qcdr_ingest.events.adapters.falco import PRIORITIES
from qcdr_ingest.events.adapters.falco import convert as falco
from qcdr_ingest.events.registry import AdapterError

from tests.ingest.events.factories import falco_alert, falco_rules, load_json_or_lines

pytestmark = pytest.mark.shared

EXPECTED_SEVERITY = {
    "EMERGENCY": Severity.CRITICAL,
    "ALERT": Severity.CRITICAL,
    "CRITICAL": Severity.CRITICAL,
    "ERROR": Severity.HIGH,
    "WARNING": Severity.MEDIUM,
    "NOTICE": Severity.LOW,
    "INFORMATIONAL": Severity.INFO,
    "INFO": Severity.INFO,
    "DEBUG": Severity.INFO,
}


def rule(shared: Path, name: str) -> Any:
    return next(r for r in falco_rules(shared) if r.name == name)


def test_the_corpus_alert_sample(shared_path: Path) -> None:
    alerts = load_json_or_lines(
        shared_path / "corpora" / "falco" / "alerts" / "single_rule_with_cat_write.json"
    )
    events = [falco(alert, "c1") for alert in alerts]
    assert len({e.id for e in events}) == len(alerts) == 8
    first = events[0]
    assert (first.source, first.category, first.severity) == ("falco", "open_from_cat", Severity.MEDIUM)
    assert first.event_time == datetime(2016, 8, 4, 16, 17, 57, 881781, tzinfo=UTC)
    assert first.message == alerts[0]["output"]
    assert first.techniques == ()
    assert first.workload.cluster == "c1"


def test_every_rule_output_becomes_an_event(shared_path: Path) -> None:
    rules = falco_rules(shared_path)
    assert len(rules) > 80
    for r in rules:
        event = falco(falco_alert(r), "c")
        assert event.category == r.name
        assert event.severity is EXPECTED_SEVERITY[r.priority.upper()], r.name
        wanted = {t for t in r.tags if t.startswith("T") and t[1:5].isdigit()}
        assert set(event.techniques) == wanted, r.name
        assert (event.workload.namespace, event.workload.pod) == ("shop", "payments-7d4b9c6f8-xk2qp")
        assert event.workload.image == "ghcr.io/acme/payments:1.4.2"
        assert event.workload.container_id == "3ad7b26ded6d"


def test_shell_in_container(shared_path: Path) -> None:
    alert = falco_alert(rule(shared_path, "Terminal shell in container"))
    event = falco(alert, "c")
    assert event.techniques == ("T1059",)
    assert event.process is not None
    assert (event.process.name, event.process.path) == ("bash", "/usr/bin/bash")
    assert event.process.pid is None  # proc.pid is not in this rule's output
    assert event.network is None  # no descriptor fields in this rule's output


def test_outbound_connection_rule_gives_the_remote_address(shared_path: Path) -> None:
    flagged = next(r for r in falco_rules(shared_path) if "ip=%fd.rip" in r.output)
    event = falco(falco_alert(flagged), "c")
    assert event.network is not None
    assert (event.network.ip, event.network.port) == (ip_address("203.0.113.50"), 4444)


def test_connection_from_fd_name_only(shared_path: Path) -> None:
    nodeport = rule(shared_path, "Unexpected K8s NodePort Connection")
    assert "%fd.rip" not in nodeport.output
    assert "%fd.name" in nodeport.output
    event = falco(falco_alert(nodeport), "c")
    assert event.network is not None
    assert (event.network.ip, event.network.port) == (ip_address("203.0.113.50"), 4444)
    # the remote end is the side whose port is fd.rport: here the client connected to us
    inbound = falco_alert(nodeport, **{"fd.name": "198.51.100.4:51000->10.244.1.17:30080", "fd.rport": 51000})
    network = falco(inbound, "c").network
    assert network is not None
    assert (network.ip, network.port) == (ip_address("198.51.100.4"), 51000)


def test_resolved_name_is_the_domain(shared_path: Path) -> None:
    alert = falco_alert(rule(shared_path, "Unexpected K8s NodePort Connection"))
    alert["output_fields"].update({"fd.rip": "203.0.113.50", "fd.rip.name": "C2.Example.NET."})
    network = falco(alert, "c").network
    assert network is not None
    assert network.domain == "c2.example.net"


def test_host_events_have_no_container(shared_path: Path) -> None:
    alert = falco_alert(rule(shared_path, "Terminal shell in container"), **{"container.id": "host"})
    for key in ("k8s.ns.name", "k8s.pod.name", "container.name"):
        alert["output_fields"][key] = None
    event = falco(alert, "c")
    assert (event.workload.container_id, event.workload.namespace, event.workload.pod) == (None, None, None)


def test_priorities_in_any_case() -> None:
    assert set(PRIORITIES) == {p.lower() for p in EXPECTED_SEVERITY}
    for word, severity in EXPECTED_SEVERITY.items():
        alert = {"rule": "r", "priority": word.lower(), "time": "2026-01-01T00:00:00Z", "output": "x"}
        assert falco(alert, "c").severity is severity


def test_time_from_evt_time_nanoseconds() -> None:
    alert = {"rule": "r", "priority": "Notice", "output_fields": {"evt.time": 1772366400123456789}}
    assert falco(alert, "c").event_time == datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC)


def test_the_id_is_stable_and_a_uuid_wins() -> None:
    alert = {
        "rule": "r",
        "priority": "Notice",
        "time": "2026-01-01T00:00:00Z",
        "output": "a",
        "hostname": "h",
    }
    assert falco(dict(alert), "c").id == falco(dict(alert), "d").id
    assert falco({**alert, "output": "b"}, "c").id != falco(alert, "c").id
    with_uuid = {**alert, "uuid": "5a3c2a4e-8bd4-4bd1-8d3b-6f3f0b4f5b70"}
    assert falco({**with_uuid, "output": "other"}, "c").id == falco(with_uuid, "c").id


@pytest.mark.parametrize(
    ("alert", "reason"),
    [
        ("text", "not a JSON object"),
        ({"priority": "Warning", "time": "2026-01-01T00:00:00Z"}, "rule is missing"),
        ({"rule": "r", "time": "2026-01-01T00:00:00Z"}, "priority is missing"),
        ({"rule": "r", "priority": "Loud", "time": "2026-01-01T00:00:00Z"}, "unknown priority"),
        ({"rule": "r", "priority": "Warning"}, "time is missing"),
        ({"rule": "r", "priority": "Warning", "time": 12}, "not plausible epoch nanoseconds"),
        (
            {"rule": "r", "priority": "Warning", "time": "2026-01-01T00:00:00Z", "output_fields": [1]},
            "not an object",
        ),
    ],
)
def test_bad_alerts_are_rejected_with_a_reason(alert: Any, reason: str) -> None:
    with pytest.raises(AdapterError, match=reason):
        falco(alert, "c")

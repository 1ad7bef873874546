"""Hubble L3/L4 flows: the start of a connection, seen from the client pod, becomes one
``network_flow`` event; the rest of the connection's flows are ignored, not rejected."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_ingest.events.registry import AdapterError, NotAnEventError, load_adapters

from tests.ingest.events.factories import HUBBLE_SYN as SYN
from tests.ingest.events.factories import hubble_flow as variant


def convert(item: Any, cluster: str = "default") -> SecurityEvent:
    return load_adapters().get("hubble").convert(item, cluster)


def test_a_syn_from_a_pod_is_a_connection_event() -> None:
    event = convert(SYN)
    assert (event.source, event.category, event.severity) == ("hubble", "network_flow", Severity.INFO)
    assert event.workload.cluster == "topgun"
    assert (event.workload.namespace, event.workload.pod) == ("shop", "api-9b649846d-bxqfc")
    assert (event.workload.owner_kind, event.workload.owner_name) == ("Deployment", "api")
    assert event.network is not None
    assert (str(event.network.ip), event.network.port, event.network.domain) == ("10.0.0.21", 5432, None)
    assert event.message == "TCP to 10.0.0.21:5432 FORWARDED -> shop/db-0"
    assert event.raw == SYN  # the correlation engine reads both endpoints from it
    assert event.process is None


def test_copies_of_one_syn_are_one_event() -> None:
    """The policy-verdict notification and a retransmitted SYN are the same connection."""
    first = convert(SYN)
    verdict_note = variant(uuid="other", event_type={"type": 5}, time="2026-07-31T10:41:02.9Z")
    assert convert(verdict_note).id == first.id
    assert convert(SYN["flow"]).id == first.id  # bare flow
    later = variant(time="2026-07-31T10:45:00Z")
    assert convert(later).id != first.id  # the same 5-tuple minutes later: a new connection
    other_port = variant(l4={"TCP": {"source_port": 60525, "destination_port": 5432, "flags": {"SYN": True}}})
    assert convert(other_port).id != first.id


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"is_reply": True}, "a reply"),
        (
            {"l4": {"TCP": {"source_port": 1, "destination_port": 5432, "flags": {"ACK": True}}}},
            "not the start",
        ),
        (
            {
                "l4": {
                    "TCP": {"source_port": 1, "destination_port": 5432, "flags": {"SYN": True, "ACK": True}}
                }
            },
            "not the start",
        ),
        ({"traffic_direction": "INGRESS"}, "arriving at the server"),
        ({"source": {"identity": 1, "labels": ["reserved:host"]}}, "not from a pod"),
        ({"l4": {"ICMPv4": {"type": 0}}}, "not the start"),
        ({"l4": {"ICMPv6": {"type": 129}}}, "not the start"),
    ],
)
def test_the_rest_of_a_connection_is_ignored(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(NotAnEventError, match=why):
        convert(variant(**changes))


def test_a_drop_at_the_servers_ingress_is_kept() -> None:
    """The client's EGRESS copy says FORWARDED; the server's policy dropped it on arrival."""
    dropped = variant(traffic_direction="INGRESS", verdict="DROPPED", drop_reason_desc="POLICY_DENIED")
    event = convert(dropped)
    assert event.severity == Severity.LOW
    assert event.message == "TCP to 10.0.0.21:5432 DROPPED (POLICY_DENIED) -> shop/db-0"
    assert event.id != convert(SYN).id  # the verdict is part of the identity


def test_udp_icmp_ipv6_and_names() -> None:
    udp = convert(
        variant(
            l4={"UDP": {"source_port": 40000, "destination_port": 53}},
            IP={"source": "fd00::5", "destination": "2001:db8::53", "ipVersion": "IPv6"},
            destination={"identity": 2, "labels": ["reserved:world"]},
            destination_names=["Resolver.Example.", "other.example"],
        )
    )
    assert udp.network is not None
    assert (str(udp.network.ip), udp.network.port, udp.network.domain) == (
        "2001:db8::53",
        53,
        "resolver.example",
    )
    assert udp.message == "UDP to [2001:db8::53]:53 FORWARDED"
    ping = convert(variant(l4={"ICMPv4": {"type": 8, "code": 0}}))
    assert ping.network is not None
    assert ping.network.port is None
    assert ping.message.startswith("ICMPv4 to 10.0.0.21 FORWARDED")


def test_the_cluster_given_stands_in_when_the_flow_names_none() -> None:
    flow = variant(source={"namespace": "shop", "pod_name": "api-1"})
    assert convert(flow, cluster="prod").workload.cluster == "prod"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"l4": {"GRE": {}}}, "no known protocol"),
        ({"IP": {"source": "10.0.1.235"}}, "IP.destination"),
        ({"IP": {"source": "10.0.1.235", "destination": "not-an-ip"}}, "IP.destination"),
        ({"l4": {"TCP": {"flags": {"SYN": True}}}}, "destination_port"),
        ({"l4": {"TCP": {"destination_port": 70000, "flags": {"SYN": True}}}}, "destination_port"),
        ({"verdict": "MAYBE"}, "unknown verdict"),
        ({"time": "yesterday"}, "ISO 8601"),
    ],
)
def test_malformed_flows_are_rejected_with_a_reason(changes: dict[str, Any], reason: str) -> None:
    item = variant(**changes)
    if "time" in changes:
        item.pop("time")
    with pytest.raises(AdapterError, match=reason) as raised:
        convert(item)
    assert not isinstance(raised.value, NotAnEventError)

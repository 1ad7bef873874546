"""The ``dns`` and ``hubble`` event adapters: DNS queries become ``dns_query`` events."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_common.contracts.events.v1 import Severity
from qcdr_ingest.events.registry import AdapterError, NotAnEventError, load_adapters

# Field names as in Hubble's flow.proto JSON (``hubble observe -o json``).
HUBBLE_RESPONSE: dict[str, Any] = {
    "flow": {
        "time": "2026-05-01T12:00:00.123456789Z",
        "uuid": "6f0c2d1e-0000-4000-8000-000000000001",
        "verdict": "FORWARDED",
        "IP": {"source": "10.96.0.10", "destination": "10.0.1.23", "ipVersion": "IPv4"},
        "l4": {"UDP": {"source_port": 53, "destination_port": 41234}},
        "source": {"namespace": "kube-system", "pod_name": "coredns-abc"},
        "destination": {
            "namespace": "shop",
            "pod_name": "cart-7d9f-x2",
            "workloads": [{"name": "cart", "kind": "Deployment"}],
        },
        "Type": "L7",
        "node_name": "kind-worker",
        "l7": {
            "type": "RESPONSE",
            "latency_ns": "1200000",
            "dns": {
                "query": "Pool.MineXMR.com.",
                "ips": ["203.0.113.10", "2001:db8::10"],
                "ttl": 300,
                "rcode": 0,
                "qtypes": ["A"],
                "rrtypes": ["A"],
                "observation_source": "proxy",
            },
        },
        "is_reply": True,
    },
    "node_name": "kind-worker",
    "time": "2026-05-01T12:00:00.123456789Z",
}


def convert(source: str, item: Any) -> Any:
    return load_adapters().get(source).convert(item, "c1")


def test_dns_item() -> None:
    item = {
        "time": "2026-05-01T12:00:00Z",
        "query": "Bücher.Example.",
        "type": "aaaa",
        "rcode": 3,
        "answers": [{"data": "2001:db8::1", "type": "AAAA", "ttl": 30}, "203.0.113.5"],
        "workload": {"namespace": "shop", "pod": "cart-1", "container_id": "containerd://abc"},
        "process": {"name": "curl", "pid": 42},
    }
    event = convert("dns", item)
    assert (event.source, event.category, event.severity) == ("dns", "dns_query", Severity.INFO)
    assert event.network is not None
    assert event.network.domain == "xn--bcher-kva.example"
    assert event.message == "AAAA xn--bcher-kva.example -> NXDOMAIN [2001:db8::1, 203.0.113.5]"
    assert (event.workload.cluster, event.workload.pod, event.workload.container_id) == (
        "c1",
        "cart-1",
        "abc",
    )
    assert event.process is not None
    assert event.process.name == "curl"
    assert event.raw == item
    assert convert("dns", item).id == event.id  # re-sending is a duplicate
    assert convert("dns", {**item, "id": "q-1"}).id == "dns:q-1"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ([], "not a JSON object"),
        ({"time": "2026-05-01T12:00:00Z"}, "query is missing"),
        ({"time": "2026-05-01T12:00:00Z", "query": "1.2.3.4"}, "query: an IP address"),
        ({"time": "2026-05-01T12:00:00Z", "query": "a..b"}, "query: label"),
        ({"time": "2026-05-01T12:00:00Z", "query": "ok.example", "rcode": "WHAT"}, "unknown rcode"),
        ({"time": "2026-05-01T12:00:00Z", "query": "ok.example", "type": "A; drop"}, "type must be"),
        ({"time": "2026-05-01T12:00:00", "query": "ok.example"}, "no time zone"),
        ({"time": "2026-05-01T12:00:00Z", "query": "ok.example", "workload": "x"}, "workload must"),
    ],
)
def test_dns_item_rejections(item: Any, reason: str) -> None:
    with pytest.raises(AdapterError, match=reason):
        convert("dns", item)


def test_hubble_response_flow() -> None:
    event = convert("hubble", HUBBLE_RESPONSE)
    assert (event.source, event.category) == ("hubble", "dns_query")
    assert event.network is not None
    assert event.network.domain == "pool.minexmr.com"
    # a response travels back to the pod that asked: the destination is the client
    assert (event.workload.namespace, event.workload.pod) == ("shop", "cart-7d9f-x2")
    assert (event.workload.owner_kind, event.workload.owner_name) == ("Deployment", "cart")
    assert event.message == "A pool.minexmr.com -> NOERROR [203.0.113.10, 2001:db8::10]"
    assert event.id == convert("hubble", HUBBLE_RESPONSE["flow"]).id  # bare flow, same id


def test_hubble_request_flow() -> None:
    flow = dict(HUBBLE_RESPONSE["flow"])
    flow.pop("uuid")
    flow["is_reply"] = False
    flow["l7"] = {"type": "REQUEST", "dns": {"query": "pool.minexmr.com.", "qtypes": ["AAAA"], "rcode": 0}}
    flow["source"], flow["destination"] = flow["destination"], flow["source"]
    event = convert("hubble", flow)
    assert event.workload.pod == "cart-7d9f-x2"
    assert event.message == "AAAA pool.minexmr.com -> no answer yet"


def test_hubble_flows_neither_dns_nor_l3_l4() -> None:
    with pytest.raises(NotAnEventError, match="L7 flow other than DNS"):
        convert("hubble", {"flow": {"time": "2026-05-01T12:00:00Z", "l7": {"kafka": {}}}})
    with pytest.raises(AdapterError, match="neither a DNS flow") as raised:
        convert("hubble", {"flow": {"time": "2026-05-01T12:00:00Z", "verdict": "FORWARDED"}})
    assert not isinstance(raised.value, NotAnEventError)  # a fault, reported to the sender
    with pytest.raises(AdapterError, match="not a JSON object"):
        convert("hubble", "flow")

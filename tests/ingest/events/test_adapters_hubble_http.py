"""Hubble L7 HTTP flows: a request from a pod becomes one ``http_request`` event; responses are
ignored, not rejected; the query string stays out of the message."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_ingest.events.registry import AdapterError, NotAnEventError, load_adapters
from qcdr_ingest.hubble._proto import observer_pb2
from qcdr_ingest.hubble.relay import as_json

from tests.ingest.events.factories import HUBBLE_SYN

URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/node-role?token=s3cr3t"


def request(**changes: Any) -> dict[str, Any]:
    """A REQUEST flow as Cilium's proxy reports it on the client's egress."""
    item = copy.deepcopy(HUBBLE_SYN)
    flow = item["flow"]
    flow.update(
        {
            "Type": "L7",
            "IP": {"source": "10.0.1.235", "destination": "169.254.169.254", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 41234, "destination_port": 80}},
            "destination": {"identity": 2, "labels": ["reserved:world"]},
            "event_type": {"type": 129},
            "l7": {
                "type": "REQUEST",
                "http": {
                    "method": "GET",
                    "url": URL,
                    "protocol": "HTTP/1.1",
                    "headers": [{"key": "User-Agent", "value": "curl/8.5.0"}],
                },
            },
            "Summary": f"HTTP/1.1 GET {URL}",
        }
    )
    for key, value in changes.items():
        if value is None:
            flow.pop(key, None)
        else:
            flow[key] = value
    return item


def convert(item: Any, cluster: str = "default") -> SecurityEvent:
    return load_adapters().get("hubble").convert(item, cluster)


def test_a_request_from_a_pod_is_an_http_request_event() -> None:
    event = convert(request())
    assert (event.source, event.category, event.severity) == ("hubble", "http_request", Severity.INFO)
    assert (event.workload.cluster, event.workload.namespace, event.workload.pod) == (
        "topgun",
        "shop",
        "api-9b649846d-bxqfc",
    )
    assert event.network is not None
    assert (str(event.network.ip), event.network.port, event.network.domain) == ("169.254.169.254", 80, None)
    # the query string (here a token) is not repeated in the message
    assert event.message == "GET http://169.254.169.254/latest/meta-data/iam/security-credentials/node-role"
    # the stored flow keeps everything but the query string's value
    stored = event.raw["flow"]["l7"]["http"]
    assert stored["url"] == URL.split("?")[0] + "?REDACTED"
    assert stored["headers"] == [{"key": "User-Agent", "value": "curl/8.5.0"}]
    assert event.raw["flow"]["Summary"] == "HTTP/1.1 GET " + stored["url"]
    assert {k: v for k, v in event.raw["flow"].items() if k not in ("l7", "Summary")} == {
        k: v for k, v in request()["flow"].items() if k not in ("l7", "Summary")
    }


def test_credentials_of_the_monitored_traffic_are_not_stored() -> None:
    item = request()
    item["flow"]["l7"]["http"]["headers"] += [
        {"key": "Authorization", "value": "Bearer eyJhbGciOi"},
        {"key": "X-aws-ec2-metadata-token", "value": "AQAEAE4X"},
        {"key": "X-Api-Key", "value": "k-123"},
        {"key": "Cookie", "value": "session=abc"},
        {"key": "Accept", "value": "*/*"},
    ]
    before = copy.deepcopy(item)
    event = convert(item)
    assert item == before  # the item as posted is not changed
    headers = {h["key"]: h["value"] for h in event.raw["flow"]["l7"]["http"]["headers"]}
    assert headers == {
        "User-Agent": "curl/8.5.0",
        "Authorization": "REDACTED",
        "X-aws-ec2-metadata-token": "REDACTED",
        "X-Api-Key": "REDACTED",
        "Cookie": "REDACTED",
        "Accept": "*/*",
    }
    for secret in ("eyJhbGciOi", "AQAEAE4X", "k-123", "session=abc", "token=s3cr3t"):
        assert secret not in str(event.model_dump())
    # a bare flow (not under "flow") is redacted the same way
    bare = convert(item["flow"])
    assert bare.raw["l7"]["http"]["url"].endswith("?REDACTED")
    assert bare.id == event.id


def test_a_host_name_in_the_url_is_the_destination_domain() -> None:
    l7 = {
        "type": "REQUEST",
        "http": {"method": "get", "url": "http://Metadata.Google.Internal./computeMetadata/v1/"},
    }
    event = convert(request(l7=l7))
    assert event.network is not None
    assert event.network.domain == "metadata.google.internal"
    assert event.message is not None
    assert event.message.startswith("GET ")


def test_the_copies_of_one_request_are_one_event() -> None:
    """The client's egress proxy and the server's ingress proxy report the same request."""
    first = convert(request())
    ingress = convert(request(traffic_direction="INGRESS", time="2026-07-31T10:41:02.9Z", uuid="x"))
    assert ingress.id == first.id
    other_path = copy.deepcopy(request())
    other_path["flow"]["l7"]["http"]["url"] = "http://169.254.169.254/latest/meta-data/"
    assert convert(other_path).id != first.id
    assert convert(request(time="2026-07-31T10:45:00Z")).id != first.id


def test_a_request_an_l7_policy_denied_is_low() -> None:
    event = convert(request(verdict="DROPPED"))
    assert event.severity == Severity.LOW
    assert event.message is not None
    assert event.message.endswith(" DROPPED")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"l7": {"type": "RESPONSE", "http": {"code": 200, "method": "GET", "url": URL}}}, "response"),
        ({"l7": {"type": "SAMPLE", "http": {"method": "GET", "url": URL}}}, "sample"),
        ({"source": {"identity": 2, "labels": ["reserved:world"]}}, "not from a pod"),
    ],
)
def test_what_is_not_a_request_from_a_pod_is_ignored(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(NotAnEventError, match=why):
        convert(request(**changes))


@pytest.mark.parametrize(
    ("http", "why"),
    [
        ({"url": URL}, "method"),
        ({"method": "G E T", "url": URL}, "method"),
        ({"method": "GET"}, "url"),
    ],
)
def test_a_malformed_request_is_rejected_with_the_reason(http: dict[str, Any], why: str) -> None:
    with pytest.raises(AdapterError, match=why):
        convert(request(l7={"type": "REQUEST", "http": http}))


def test_a_request_streamed_from_hubble_relay_decodes_to_the_same_event() -> None:
    """The collector's protobuf messages carry the HTTP record (flow.proto's field numbers) and
    print as ``hubble observe -o json`` does."""
    flow = copy.deepcopy(request()["flow"])
    for key in ("ethernet", "Summary", "is_reply", "uuid", "event_type"):
        flow.pop(key, None)
    flow["source"].pop("ID")
    flow["source"].pop("identity")
    flow["destination"].pop("identity")
    response = ParseDict({"flow": flow, "node_name": "topgun/worker-1"}, observer_pb2.GetFlowsResponse())
    wire = observer_pb2.GetFlowsResponse.FromString(response.SerializeToString())
    item = as_json(wire)
    assert item["flow"]["l7"]["http"]["headers"] == [{"key": "User-Agent", "value": "curl/8.5.0"}]
    assert convert(item).id == convert(request()).id

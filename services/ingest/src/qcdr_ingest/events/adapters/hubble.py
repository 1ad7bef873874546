"""Hubble flows, as ``hubble observe -o json`` prints them (bare or under ``"flow"``): DNS flows
(``l7.dns``) become ``dns_query`` events (:mod:`qcdr_ingest.dns.queries`), HTTP requests
(``l7.http``) ``http_request`` events (:mod:`qcdr_ingest.events.http_requests`), L3/L4 flows that
start a connection ``network_flow`` events (:mod:`qcdr_ingest.events.flows`); the rest of a
connection's flows, HTTP responses and other L7 protocols are ignored."""

from __future__ import annotations

from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_ingest.dns.queries import convert_hubble, hubble_flow
from qcdr_ingest.events import fields as f
from qcdr_ingest.events.flows import convert_flow
from qcdr_ingest.events.http_requests import convert_http
from qcdr_ingest.events.registry import AdapterError, NotAnEventError, register


def convert(raw: Any, cluster: str) -> SecurityEvent:
    flow = hubble_flow(raw)
    if isinstance(f.obj(flow.get("l7")).get("dns"), dict):
        return convert_hubble(raw, cluster)
    if isinstance(f.obj(flow.get("l7")).get("http"), dict):
        return convert_http(flow, raw, cluster)
    if flow.get("l7") is not None or flow.get("Type") == "L7":
        raise NotAnEventError("an L7 flow other than DNS or HTTP")
    if isinstance(flow.get("l4"), dict):
        return convert_flow(flow, raw, cluster)
    raise AdapterError("neither a DNS flow (l7.dns) nor an L3/L4 flow (l4)")


register(
    "hubble",
    "Hubble flows (hubble observe -o json): DNS queries, HTTP requests, and connection starts as "
    "network_flow",
    convert,
    __name__,
)

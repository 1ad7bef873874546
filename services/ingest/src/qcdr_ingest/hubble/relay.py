"""Hubble Relay's ``observer.Observer/GetFlows``, followed: the request, the channel, and each
response as the JSON ``hubble observe -o json`` prints, so the ``hubble`` adapter reads both alike.

The request asks Relay to send only what becomes an event (filters run in the Cilium agents, so
the rest never crosses the network): TCP SYNs, UDP/ICMP/SCTP flows that are not replies, and DNS
flows; SYN-ACKs and everything after them are excluded. The adapter still checks each flow, so
a Relay that ignores a filter costs traffic, not correctness.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from qcdr_ingest.hubble._proto import flow_pb2, observer_pb2

METHOD = "/observer.Observer/GetFlows"


def _filters() -> tuple[list[flow_pb2.FlowFilter], list[flow_pb2.FlowFilter]]:
    allow = [
        flow_pb2.FlowFilter(tcp_flags=[flow_pb2.TCPFlags(SYN=True)]),
        flow_pb2.FlowFilter(protocol=["udp", "icmp", "sctp"], reply=[False]),
        flow_pb2.FlowFilter(protocol=["dns"]),
    ]
    deny = [flow_pb2.FlowFilter(tcp_flags=[flow_pb2.TCPFlags(ACK=True)])]
    return allow, deny


def request(since: datetime) -> observer_pb2.GetFlowsRequest:
    """Follow the flows from ``since`` on (Relay replays what its agents' ring buffers hold)."""
    stamp = Timestamp()
    stamp.FromDatetime(since)
    allow, deny = _filters()
    return observer_pb2.GetFlowsRequest(follow=True, since=stamp, whitelist=allow, blacklist=deny)


@dataclass(frozen=True)
class RelayTarget:
    """Where Relay listens and how to trust it: plaintext (``ca_file`` unset), TLS, or mutual TLS
    (``cert_file`` and ``key_file`` too). ``server_name`` overrides the name the certificate must
    carry (Cilium's Relay certificates name ``*.hubble-relay.cilium.io``, not the Service)."""

    address: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


def channel(target: RelayTarget) -> grpc.aio.Channel:
    if target.ca_file is None:
        return grpc.aio.insecure_channel(target.address)
    chain = target.cert_file.read_bytes() if target.cert_file else None
    key = target.key_file.read_bytes() if target.key_file else None
    credentials = grpc.ssl_channel_credentials(target.ca_file.read_bytes(), key, chain)
    options = [("grpc.ssl_target_name_override", target.server_name)] if target.server_name else []
    return grpc.aio.secure_channel(target.address, credentials, options=options)


async def follow(ch: grpc.aio.Channel, since: datetime) -> AsyncIterator[observer_pb2.GetFlowsResponse]:
    """The responses of one GetFlows stream, until Relay ends it or the connection fails."""
    call = ch.unary_stream(
        METHOD,
        request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
        response_deserializer=observer_pb2.GetFlowsResponse.FromString,
    )
    stream = call(request(since))
    try:
        async for response in stream:
            yield response
    finally:
        stream.cancel()


def as_json(response: observer_pb2.GetFlowsResponse) -> dict[str, Any]:
    """A flow response as ``hubble observe -o json`` prints it (proto field names, enum names,
    RFC 3339 times, wrapper types as plain values)."""
    out: dict[str, Any] = {"flow": MessageToDict(response.flow, preserving_proto_field_name=True)}
    if response.node_name:
        out["node_name"] = response.node_name
    if response.HasField("time"):
        out["time"] = response.time.ToJsonString()
    return out

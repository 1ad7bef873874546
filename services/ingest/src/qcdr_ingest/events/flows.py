"""Hubble L3/L4 flows as connection events (``network_flow``).

Hubble reports every packet event Cilium's datapath traces: for one TCP connection the SYN, the
SYN-ACK, each ACK and FIN, at several observation points (leaving the client's endpoint, arriving
at the server's), plus a policy-verdict notification. What the analysis wants is the connection:
*this pod opened a connection to that address and port*. So one flow becomes an event only when
it is the **start of a connection, seen from the client**:

* not a reply (``is_reply``), and for TCP a SYN without ACK; UDP, SCTP and ICMP flows that are not
  replies (UDP has no handshake: every datagram the client sends is a start, and the id below
  folds them together);
* from a pod (``source.pod_name``): flows from the host, the world or other reserved identities
  have no workload to attribute them to;
* seen leaving the client (``traffic_direction`` EGRESS or unknown). An INGRESS copy of the same
  SYN at the server's endpoint is the same connection, except when the server's ingress policy
  dropped it: a DROPPED INGRESS flow is kept, because the client's EGRESS copy says FORWARDED.

Anything else raises :class:`~qcdr_ingest.events.registry.NotAnEventError`: the batch's answer counts
it as ignored, not as a fault, so ``hubble observe -o json`` can be piped in unfiltered (filtering
at the Hubble exporter saves the traffic: docs/DNS.md).

The event id is the connection's identity: cluster, protocol, both addresses and ports, verdict
and the minute. The copies of one SYN (observation points, retransmissions, the policy-verdict
notification) and the datagrams of one UDP exchange within a minute are one event, stored once.

The event: ``workload`` = the client pod, ``network`` = the server's address and port (and the
first name Hubble's DNS cache gives for it, ``destination_names``), severity ``info``, or ``low``
when a policy dropped it. ``raw`` keeps the flow, so the correlation engine learns both pods'
addresses from it (the server pod's from ``destination``).
"""

from __future__ import annotations

from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent, Severity

from qcdr_ingest.dns.queries import endpoint_workload
from qcdr_ingest.events import fields as f
from qcdr_ingest.events.registry import AdapterError, NotAnEventError

CATEGORY = "network_flow"
_PROTOCOLS = ("TCP", "UDP", "SCTP", "ICMPv4", "ICMPv6")
# ICMP types that answer (echo reply, destination unreachable, time exceeded, ...): never a start.
_ICMP_REPLIES = {"ICMPv4": frozenset({0, 3, 5, 11, 12, 14, 16, 18}), "ICMPv6": frozenset({1, 2, 3, 4, 129})}
_VERDICTS = frozenset({"FORWARDED", "DROPPED", "AUDIT", "ERROR", "REDIRECTED", "TRACED", "TRANSLATED"})


def _protocol(l4: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for name in _PROTOCOLS:
        body = l4.get(name)
        if isinstance(body, dict):
            return name, body
    raise AdapterError(f"l4 names no known protocol ({', '.join(_PROTOCOLS)})")


def _start_of_connection(protocol: str, body: dict[str, Any]) -> bool:
    if protocol == "TCP":
        flags = f.obj(body.get("flags"))
        return flags.get("SYN") is True and flags.get("ACK") is not True
    if protocol in _ICMP_REPLIES:
        kind = body.get("type")
        return not (isinstance(kind, int) and kind in _ICMP_REPLIES[protocol])
    return True


def _first_name(value: Any) -> str | None:
    if isinstance(value, list):
        for name in value:
            if isinstance(name, str) and 0 < len(name) <= 253:
                return name.lower().rstrip(".")
    return None


def convert_flow(flow: dict[str, Any], raw: dict[str, Any], cluster: str) -> SecurityEvent:
    """One Hubble flow with ``l4`` (``raw`` is the item as sent: the flow, bare or under ``"flow"``)."""
    protocol, body = _protocol(f.obj(flow.get("l4")))
    if flow.get("is_reply") is True:
        raise NotAnEventError("a reply, not the start of a connection")
    if not _start_of_connection(protocol, body):
        raise NotAnEventError("not the start of a connection (TCP without SYN, or SYN-ACK)")
    verdict = f.text(flow.get("verdict")) or "FORWARDED"
    if verdict not in _VERDICTS:
        raise AdapterError(f"unknown verdict {verdict[:20]!r}")
    direction = f.text(flow.get("traffic_direction"))
    if direction == "INGRESS" and verdict != "DROPPED":
        raise NotAnEventError("seen arriving at the server (the client's EGRESS copy is the event)")
    client = f.obj(flow.get("source"))
    workload = endpoint_workload(client, cluster)
    if not workload["pod"]:
        raise NotAnEventError("not from a pod (the host, the world or a reserved identity)")
    addresses = f.obj(flow.get("IP"))
    src, dst = f.ip(addresses.get("source")), f.ip(addresses.get("destination"))
    if dst is None:
        raise AdapterError("IP.destination is missing or not an IP address")
    sport, dport = f.port(body.get("source_port")), f.port(body.get("destination_port"))
    if protocol in ("TCP", "UDP", "SCTP") and dport is None:
        raise AdapterError(f"l4.{protocol}.destination_port is missing or out of range")
    time_value = flow.get("time", raw.get("time"))
    event_time = f.parse_time(time_value, "time")
    minute = str(int(event_time.timestamp()) // 60)
    event_id = f.stable_id(
        "hubble",
        "flow",
        workload["cluster"],
        protocol,
        str(src),
        str(sport),
        str(dst),
        str(dport),
        verdict,
        minute,
    )
    server = f.obj(flow.get("destination"))
    peer = "/".join(x for x in (f.text(server.get("namespace")), f.text(server.get("pod_name"))) if x)
    reason = f.text(flow.get("drop_reason_desc"))
    target = f"[{dst}]:{dport}" if dst.version == 6 else f"{dst}:{dport}"
    message = f"{protocol} to {target if dport is not None else dst} {verdict}"
    message += f" ({reason})" if verdict == "DROPPED" and reason else ""
    message += f" -> {peer}" if peer else ""
    return f.validate_event(
        {
            "id": event_id,
            "source": "hubble",
            "category": CATEGORY,
            "severity": Severity.LOW if verdict == "DROPPED" else Severity.INFO,
            "event_time": event_time,
            "message": f.shorten(message),
            "workload": workload,
            "process": None,
            "network": {"ip": dst, "port": dport, "domain": _first_name(flow.get("destination_names"))},
            "raw": raw,
        }
    )

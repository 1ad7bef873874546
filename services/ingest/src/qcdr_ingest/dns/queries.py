"""DNS queries as events: the ``dns`` JSON shape and Hubble DNS flows, both to ``dns_query``.

Every query becomes a :class:`SecurityEvent` with category ``dns_query``, severity ``info``,
``network.domain`` = the canonical query name and ``raw`` = the item as sent. Detection (feeds,
DGA) happens downstream; ingest only normalises, so one pipeline serves every source.

The ``dns`` shape (``POST /v1/events/dns``), one object per query::

    {"time": "2026-01-02T03:04:05Z",            # ISO 8601 with zone, or epoch nanoseconds
     "query": "Pool.MineXMR.com.", "type": "A", # "type" optional (default A)
     "rcode": "NOERROR",                        # name or number (0 NOERROR, 3 NXDOMAIN, ...)
     "answers": ["203.0.113.7"],                # optional; strings, or {"data", "type", "ttl"}
     "workload": {"cluster", "namespace", "pod", "container", "container_id", "image",
                  "owner_kind", "owner_name"},  # all optional
     "process": {"name", "path", "pid"},        # optional
     "id": "..."}                               # optional; else derived from the fields above

Hubble (``POST /v1/events/hubble``): a flow as ``hubble observe -o json`` or the Observer API
prints it, bare or under ``"flow"``, with ``l7.dns`` (the adapter sends L3/L4 flows to
:mod:`qcdr_ingest.events.flows`). The querying
pod is the flow's source on a request and its destination on a response (``l7.type`` RESPONSE or
``is_reply``): the DNS proxy reports the answer travelling back to the pod.
"""

from __future__ import annotations

from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent, Severity

from qcdr_ingest.dns.names import InvalidNameError, normalize
from qcdr_ingest.events import fields as f
from qcdr_ingest.events.registry import AdapterError

CATEGORY = "dns_query"
RCODES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}
_RCODE_NAMES = frozenset(RCODES.values())
_WORKLOAD_KEYS = (
    "cluster",
    "namespace",
    "pod",
    "container",
    "container_id",
    "image",
    "owner_kind",
    "owner_name",
)


def query_name(value: Any) -> str:
    if not isinstance(value, str):
        raise AdapterError("query is missing" if value is None else "query must be a string")
    try:
        return normalize(value)
    except InvalidNameError as exc:
        raise AdapterError(f"query: {exc}") from None


def rcode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return RCODES.get(value, f"RCODE{value}")
    if isinstance(value, str) and value.strip().upper() in _RCODE_NAMES:
        return value.strip().upper()
    raise AdapterError(f"unknown rcode {str(value)[:20]!r}")


def _answers(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise AdapterError("answers must be a list")
    found = []
    for item in value:
        data = item.get("data") if isinstance(item, dict) else item
        if isinstance(data, str) and data:
            found.append(data)
    return found


def _event(
    *,
    source: str,
    event_id: str,
    name: str,
    qtype: str,
    code: str | None,
    answers: list[str],
    event_time: Any,
    workload: dict[str, Any],
    process: dict[str, Any] | None,
    raw: dict[str, Any],
) -> SecurityEvent:
    shown = ", ".join(answers[:5]) + (" …" if len(answers) > 5 else "")
    message = f"{qtype} {name} -> {code or 'no answer yet'}" + (f" [{shown}]" if shown else "")
    return f.validate_event(
        {
            "id": event_id,
            "source": source,
            "category": CATEGORY,
            "severity": Severity.INFO,
            "event_time": event_time,
            "message": f.shorten(message),
            "workload": workload,
            "process": process,
            "network": {"domain": name},
            "raw": raw,
        }
    )


def convert_dns(raw: Any, cluster: str) -> SecurityEvent:
    """One item of the ``dns`` shape (module docstring)."""
    if not isinstance(raw, dict):
        raise AdapterError(f"query is not a JSON object (got {f.type_name(raw)})")
    name = query_name(raw.get("query", raw.get("name")))
    qtype = raw.get("type", "A")
    if not isinstance(qtype, str) or not qtype.isalnum() or len(qtype) > 10:
        raise AdapterError("type must be a record type such as A, AAAA, TXT")
    qtype = qtype.upper()
    code = rcode(raw.get("rcode"))
    event_time = f.parse_time(raw.get("time"), "time")
    given = raw.get("workload")
    if given is not None and not isinstance(given, dict):
        raise AdapterError("workload must be an object")
    workload = {key: f.text((given or {}).get(key)) for key in _WORKLOAD_KEYS}
    workload["cluster"] = workload["cluster"] or cluster
    workload["container_id"] = f.container_id(workload["container_id"])
    proc = f.obj(raw.get("process"))
    process = (
        {"name": f.text(proc.get("name")), "path": f.text(proc.get("path")), "pid": f.pid(proc.get("pid"))}
        if proc
        else None
    )
    event_id = f.text(raw.get("id"))
    if event_id is None:
        who = "/".join(workload[k] or "" for k in ("cluster", "namespace", "pod", "container_id"))
        event_id = f.stable_id("dns", event_time.isoformat(), who, name, qtype, code or "")
    elif not event_id.startswith("dns:"):
        event_id = f"dns:{event_id}"[:200]
    return _event(
        source="dns",
        event_id=event_id,
        name=name,
        qtype=qtype,
        code=code,
        answers=_answers(raw.get("answers")),
        event_time=event_time,
        workload=workload,
        process=process,
        raw=raw,
    )


def endpoint_workload(endpoint: dict[str, Any], cluster: str) -> dict[str, Any]:
    """The workload of a Hubble flow endpoint (``source`` or ``destination``)."""
    workloads = endpoint.get("workloads")
    owner = (
        workloads[0] if isinstance(workloads, list) and workloads and isinstance(workloads[0], dict) else {}
    )
    return {
        "cluster": f.text(endpoint.get("cluster_name")) or cluster,
        "namespace": f.text(endpoint.get("namespace")),
        "pod": f.text(endpoint.get("pod_name")),
        "owner_kind": f.text(owner.get("kind")),
        "owner_name": f.text(owner.get("name")),
    }


def hubble_flow(raw: Any) -> dict[str, Any]:
    """The flow of a Hubble item: the item itself, or its ``"flow"`` (as ``hubble observe`` prints)."""
    if not isinstance(raw, dict):
        raise AdapterError(f"flow is not a JSON object (got {f.type_name(raw)})")
    flow = raw.get("flow", raw)
    if not isinstance(flow, dict):
        raise AdapterError("flow is not an object")
    return flow


def convert_hubble(raw: Any, cluster: str) -> SecurityEvent:
    """One Hubble flow carrying ``l7.dns`` (module docstring)."""
    flow = hubble_flow(raw)
    l7 = f.obj(flow.get("l7"))
    dns = l7.get("dns")
    if not isinstance(dns, dict):
        raise AdapterError("not a DNS flow (no l7.dns)")
    name = query_name(dns.get("query"))
    qtypes = dns.get("qtypes")
    qtype = qtypes[0] if isinstance(qtypes, list) and qtypes and isinstance(qtypes[0], str) else "A"
    reply = l7.get("type") == "RESPONSE" or flow.get("is_reply") is True
    # a request has no rcode yet; Hubble prints rcode 0 on requests too, so only trust it on replies
    code = rcode(dns.get("rcode", 0)) if reply else None
    ips = dns.get("ips")
    answers = [ip for ip in ips if isinstance(ip, str)] if isinstance(ips, list) else []
    time_value = flow.get("time", raw.get("time"))
    event_time = f.parse_time(time_value, "time")
    client = f.obj(flow.get("destination") if reply else flow.get("source"))
    workload = endpoint_workload(client, cluster)
    uuid = f.text(flow.get("uuid"))
    if uuid:
        event_id = f.stable_id("hubble", "uuid", uuid)
    else:
        node = f.text(flow.get("node_name")) or f.text(raw.get("node_name")) or ""
        who = "/".join(workload[k] or "" for k in ("namespace", "pod"))
        event_id = f.stable_id("hubble", str(time_value), node, who, name, qtype, "reply" if reply else "req")
    return _event(
        source="hubble",
        event_id=event_id,
        name=name,
        qtype=qtype.upper(),
        code=code,
        answers=answers,
        event_time=event_time,
        workload=workload,
        process=None,
        raw=raw,
    )

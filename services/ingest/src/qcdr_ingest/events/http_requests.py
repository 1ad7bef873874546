"""Hubble L7 HTTP flows as request events (``http_request``).

Cilium's proxy reports HTTP when an L7 policy, or a visibility annotation, sends a pod's traffic
through it: a ``REQUEST`` flow when the request passes, a ``RESPONSE`` flow with the status code
and latency when the answer comes back. What the analysis wants is *this pod asked that server for
that URL*, so one flow becomes an event only when it is

* a request (``l7.type`` ``REQUEST``): the response repeats the request's method and URL and adds
  nothing a rule reads, and a request answered by nobody still happened;
* from a pod (``source.pod_name``): requests arriving from the world or the host have no client
  workload (inbound traffic to a server pod is not what the rules look for).

A request seen by both proxies (the client's egress and the server's ingress, when both pods
have L7 visibility) is one event: the id is the cluster, both addresses and ports, the method,
the URL, the verdict and the minute, not the observation point, so the second copy is stored
once. The same request repeated on one connection within a minute is one event too.

The event: ``workload`` = the client pod; ``network`` = the server's address and port, and the
URL's host name when it is a name; severity ``info``, or ``low`` when an L7 policy denied it;
the message is the method and URL *without its query string*. ``raw`` is the flow with what
carries credentials of the monitored traffic replaced by ``REDACTED``: the URL's query string and
the values of credential headers (``Authorization``, ``Cookie``, IMDSv2's session token, API-key
headers, ...). Hubble exports headers unless told otherwise, and these are the workload's
secrets, not evidence; redacting at the source (``--hubble-redact-enabled``) keeps them off the
wire too.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from qcdr_common.contracts.events.v1 import SecurityEvent, Severity

from qcdr_ingest.dns.queries import endpoint_workload
from qcdr_ingest.events import fields as f
from qcdr_ingest.events.registry import AdapterError, NotAnEventError

CATEGORY = "http_request"
_METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
REDACTED = "REDACTED"
# Header names (lower case) whose values are credentials; and any name with one of these parts.
_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-aws-ec2-metadata-token",
        "x-amz-security-token",
        "x-goog-iam-authorization-token",
        "x-vault-token",
    }
)
_SECRET_PARTS = ("token", "secret", "api-key", "apikey", "password", "session", "auth")


def _host(url: str) -> str | None:
    """The URL's host when it is a name (an address is in ``network.ip`` already)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host or len(host) > 253:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".")
    return None


def without_query(url: str) -> str:
    """``url`` without its query string and fragment (the parts that carry tokens)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(part in lowered for part in _SECRET_PARTS)


def redacted(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the request's query string (in the URL and the summary) and credential header
    values replaced."""
    nested = "flow" in raw and isinstance(raw["flow"], dict)
    flow = dict(raw["flow"] if nested else raw)
    l7 = dict(f.obj(flow.get("l7")))
    http = dict(f.obj(l7.get("http")))
    url = http.get("url")
    if isinstance(url, str) and "?" in url:
        http["url"] = f"{without_query(url)}?{REDACTED}"
        summary = flow.get("Summary")
        if isinstance(summary, str):  # Hubble repeats the URL there ("HTTP/1.1 GET http://...")
            flow["Summary"] = summary.replace(url, http["url"])
    headers = http.get("headers")
    if isinstance(headers, list):
        http["headers"] = [
            {**h, "value": REDACTED}
            if isinstance(h, dict) and isinstance(h.get("key"), str) and _secret_header(h["key"])
            else h
            for h in headers
        ]
    l7["http"] = http
    flow["l7"] = l7
    return {**raw, "flow": flow} if nested else flow


def convert_http(flow: dict[str, Any], raw: dict[str, Any], cluster: str) -> SecurityEvent:
    """One Hubble flow with ``l7.http`` (``raw`` is the item as sent)."""
    l7 = f.obj(flow.get("l7"))
    http = f.obj(l7.get("http"))
    kind = f.text(l7.get("type")) or "UNKNOWN_L7_TYPE"
    if kind != "REQUEST":
        raise NotAnEventError(f"an HTTP {kind.lower()}, not a request")
    method = (f.text(http.get("method")) or "").upper()
    if not method or len(method) > 20 or not set(method) <= _METHOD_CHARS:
        raise AdapterError("l7.http.method is missing or not an HTTP method")
    url = f.text(http.get("url"))
    if not url:
        raise AdapterError("l7.http.url is missing")
    verdict = f.text(flow.get("verdict")) or "FORWARDED"
    workload = endpoint_workload(f.obj(flow.get("source")), cluster)
    if not workload["pod"]:
        raise NotAnEventError("not from a pod (the host, the world or a reserved identity)")
    addresses = f.obj(flow.get("IP"))
    src, dst = f.ip(addresses.get("source")), f.ip(addresses.get("destination"))
    tcp = f.obj(f.obj(flow.get("l4")).get("TCP"))
    sport, dport = f.port(tcp.get("source_port")), f.port(tcp.get("destination_port"))
    event_time = f.parse_time(flow.get("time", raw.get("time")), "time")
    minute = str(int(event_time.timestamp()) // 60)
    event_id = f.stable_id(
        "hubble",
        "http",
        workload["cluster"],
        str(src),
        str(sport),
        str(dst),
        str(dport),
        method,
        url,
        verdict,
        minute,
    )
    shown = without_query(url)
    message = f"{method} {shown}" + (f" {verdict}" if verdict != "FORWARDED" else "")
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
            "network": {"ip": dst, "port": dport, "domain": _host(url)},
            "raw": redacted(raw),
        }
    )

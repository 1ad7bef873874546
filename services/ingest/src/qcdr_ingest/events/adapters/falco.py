"""Falco JSON alerts (``json_output: true``; what ``http_output`` and falcosidekick post).

One item is one alert: ``{"time", "rule", "priority", "output", "output_fields", "tags",
"hostname", "source"}``.

* ``category`` is the rule name; ``message`` the formatted ``output``.
* ``priority`` → severity: Emergency/Alert/Critical → critical, Error → high, Warning → medium,
  Notice → low, Informational/Info/Debug → info (any case). An unknown priority rejects the alert.
* ``tags``: ATT&CK technique ids (``T1059``, ``T1552.001``) become ``techniques``; the ``mitre_*``
  tactic tags and the rest stay in ``raw``.
* ``output_fields``: ``k8s.ns.name`` (or ``ka.target.namespace`` for audit alerts),
  ``k8s.pod.name``, ``container.id`` (``host`` means none), ``container.name``, the image from
  ``container.image`` or ``container.image.repository`` + ``container.image.tag``, and
  ``container.image.digest``; the process from ``proc.exepath`` (or an absolute ``proc.exe``),
  ``proc.name``, ``proc.pid``, and the parent's ``proc.pexepath``/``proc.pexe``.
* Network: the remote end, ``fd.rip``:``fd.rport``, else ``fd.sip``:``fd.sport``, else the side
  of ``fd.name`` (``client->server``) whose port is ``fd.rport`` (the server side without one);
  a resolved ``fd.rip.name``/``fd.sip.name`` becomes the domain.
* Time: ``time``, else ``output_fields.evt.time`` (epoch nanoseconds or ISO 8601).
* Id: ``falco:`` + sha256 of the alert's ``uuid`` when it carries one, else of (time, rule,
  hostname, output), which identifies one alert and repeats when the same alert is re-sent.
"""

from __future__ import annotations

import re
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent, Severity

from qcdr_ingest.events import fields as f
from qcdr_ingest.events.registry import AdapterError, register

SOURCE = "falco"
PRIORITIES = {
    "emergency": Severity.CRITICAL,
    "alert": Severity.CRITICAL,
    "critical": Severity.CRITICAL,
    "error": Severity.HIGH,
    "warning": Severity.MEDIUM,
    "notice": Severity.LOW,
    "informational": Severity.INFO,
    "info": Severity.INFO,
    "debug": Severity.INFO,
}
_DOMAIN = re.compile(r"(?=.{3,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{1,63}")


def _severity(value: Any) -> Severity:
    if not isinstance(value, str):
        raise AdapterError("priority is missing" if value is None else "priority must be a string")
    found = PRIORITIES.get(value.strip().lower())
    if found is None:
        raise AdapterError(f"unknown priority {value[:40]!r}")
    return found


def _techniques(tags: Any) -> tuple[str, ...]:
    if not isinstance(tags, list):
        return ()
    found = {f.technique(tag) for tag in tags if isinstance(tag, str)}
    found.discard(None)
    return tuple(sorted(t for t in found if t is not None))


def _endpoint(text: str) -> tuple[str, int | None]:
    host, _, number = text.rpartition(":")
    return (host, f.port(number)) if host else (text, None)


def _from_fd_name(name: Any, rport: int | None) -> tuple[Any, int | None]:
    if not isinstance(name, str) or "->" not in name:
        return None, None
    client, _, server = name.partition("->")
    (client_host, client_port), (server_host, server_port) = _endpoint(client), _endpoint(server)
    if rport is not None and client_port == rport and server_port != rport:
        return f.ip(client_host), client_port
    return f.ip(server_host), server_port


def _domain(value: Any) -> str | None:
    if isinstance(value, str):
        candidate = value.strip().lower().rstrip(".")
        if _DOMAIN.fullmatch(candidate) and f.ip(candidate) is None:
            return candidate
    return None


def _network(fields: dict[str, Any]) -> dict[str, Any] | None:
    rport = f.port(fields.get("fd.rport"))
    address = f.ip(fields.get("fd.rip"))
    number, domain = rport, _domain(fields.get("fd.rip.name"))
    if address is None:
        address = f.ip(fields.get("fd.sip"))
        if address is not None:
            number, domain = f.port(fields.get("fd.sport")), _domain(fields.get("fd.sip.name"))
        else:
            address, number = _from_fd_name(fields.get("fd.name"), rport)
    if address is None and number is None and domain is None:
        return None
    return {"ip": address, "port": number, "domain": domain}


def _image(fields: dict[str, Any]) -> str | None:
    image = f.text(fields.get("container.image"))
    if image:
        return image
    repository = f.text(fields.get("container.image.repository"))
    tag = f.text(fields.get("container.image.tag"))
    return f"{repository}:{tag}" if repository and tag else repository


def _process(fields: dict[str, Any]) -> dict[str, Any] | None:
    path = f.text(fields.get("proc.exepath"))
    if path is None:
        exe = f.text(fields.get("proc.exe"))
        path = exe if exe and exe.startswith("/") else None
    parent = f.text(fields.get("proc.pexepath")) or f.text(fields.get("proc.pexe"))
    name = f.text(fields.get("proc.name")) or f.basename(path)
    number = f.pid(fields.get("proc.pid"))
    if name is None and path is None and parent is None and number is None:
        return None
    return {"name": name, "path": path, "pid": number, "parent_path": parent}


def convert(raw: Any, cluster: str) -> SecurityEvent:
    if not isinstance(raw, dict):
        raise AdapterError(f"alert is not a JSON object (got {f.type_name(raw)})")
    rule = f.text(raw.get("rule"))
    if rule is None:
        raise AdapterError("rule is missing or empty")
    severity = _severity(raw.get("priority"))
    fields = raw.get("output_fields")
    if fields is None:
        fields = {}
    elif not isinstance(fields, dict):
        raise AdapterError("output_fields is not an object")
    time_value = raw.get("time")
    if time_value is None:
        time_value = fields.get("evt.time")
    event_time = f.parse_time(time_value, "time")
    output = f.text(raw.get("output"))
    uuid = f.text(raw.get("uuid"))
    if uuid:
        event_id = f.stable_id(SOURCE, "uuid", uuid)
    else:
        hostname = f.text(raw.get("hostname")) or ""
        event_id = f.stable_id(SOURCE, str(time_value), rule, hostname, output or "")
    container_id = f.text(fields.get("container.id"))
    if container_id == "host":
        container_id = None
    owner = f.text(fields.get("k8s.deployment.name"))
    data = {
        "id": event_id,
        "source": SOURCE,
        "category": f.shorten(rule, 200),
        "severity": severity,
        "event_time": event_time,
        "message": f.shorten(output) if output else None,
        "workload": {
            "cluster": cluster,
            "namespace": f.text(fields.get("k8s.ns.name")) or f.text(fields.get("ka.target.namespace")),
            "owner_kind": "Deployment" if owner else None,
            "owner_name": owner,
            "pod": f.text(fields.get("k8s.pod.name")),
            "container": f.text(fields.get("container.name")),
            "container_id": f.container_id(container_id),
            "image": _image(fields),
            "image_digest": f.text(fields.get("container.image.digest")),
        },
        "process": _process(fields),
        "network": _network(fields),
        "techniques": _techniques(raw.get("tags")),
        "raw": raw,
    }
    return f.validate_event(data)


register(
    "falco", "Falco JSON alerts (json_output, as http_output and falcosidekick send them)", convert, __name__
)

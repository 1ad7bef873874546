"""Tetragon JSON export events (``tetra getevents -o json``, the export file, fluent-bit relays).

One item is one export line: ``{"process_exec": {...}, "node_name": ..., "time": ...}``.

* Types: ``process_exec``, ``process_exit`` and the hook events ``process_kprobe``,
  ``process_tracepoint``, ``process_uprobe``, ``process_lsm``; the pre-1.0 ``process_connect``,
  ``process_close`` and ``process_listen`` (still in exported archives) too. Anything else
  (``process_loader``, ``rate_limit_info``, ...) is rejected with a reason.
* ``category`` is the type; ``severity`` is ``info`` for lifecycle and socket events, ``low`` for
  a hook a TracingPolicy asked for, ``medium`` when the policy also enforced (``SIGKILL``,
  ``OVERRIDE``, ...). Tetragon has no severity of its own: analysis decides what matters.
* Workload: ``process.pod`` (namespace, name, container id/name, image name and digest from
  ``image.id``, ``workload``/``workload_kind`` as the owner); the cluster is ``cluster_name``, or
  the one the request names.
* Process: ``binary`` (path and name), ``pid``, the parent's ``binary``. The arguments, the exec
  ids, credentials and namespaces stay in ``raw``; ``message`` is ``<hook>: <binary> <arguments>``
  so that a person (and a SOAR tool) sees the command line without digging.
* Network destination (hooks): the first ``sock_arg`` (``daddr``/``dport``), ``sockaddr_arg``
  (``addr``/``port``) or ``skb_arg`` (``daddr``/``dport``); legacy ``process_connect``:
  ``destination_ip``/``destination_port``.
* Time: the event's ``time``; a ``process_exec`` without one (older exports) takes the process's
  ``start_time``, which is the exec itself.
* Id: ``tetragon:`` + sha256 of (type, ``exec_id``, time, hook, policy): stable across re-sends of
  the same line. Without an ``exec_id`` the canonical JSON of the whole item is hashed.
"""

from __future__ import annotations

from typing import Any

import orjson
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity

from qcdr_ingest.events import fields as f
from qcdr_ingest.events.registry import AdapterError, register

SOURCE = "tetragon"
HOOKS = ("process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm")
LIFECYCLE = ("process_exec", "process_exit")
LEGACY_SOCKETS = ("process_connect", "process_close", "process_listen")
KINDS = frozenset(HOOKS + LIFECYCLE + LEGACY_SOCKETS)
_ENFORCING = frozenset({"SIGKILL", "OVERRIDE", "NOTIFY_ENFORCER", "SIGNAL"})


def _kind(raw: dict[str, Any]) -> str:
    for key in raw:
        if key in KINDS:
            return key
    other = sorted(key for key in raw if key not in ("node_name", "time", "cluster_name", "aggregation_info"))
    shown = ", ".join(other[:3]) or "none"
    raise AdapterError(f"not a supported Tetragon event (type keys: {shown}); expected one of {_EXPECTED}")


_EXPECTED = ", ".join(sorted(KINDS))


def _hook(kind: str, body: dict[str, Any]) -> str | None:
    if kind == "process_tracepoint":
        subsys, event = f.text(body.get("subsys")), f.text(body.get("event"))
        return f"{subsys}:{event}" if subsys and event else subsys or event
    if kind == "process_uprobe":
        return f.text(body.get("symbol"))
    if kind in HOOKS:
        return f.text(body.get("function_name"))
    return None


def _network(kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
    if kind == "process_connect":
        address, number = f.ip(body.get("destination_ip")), f.port(body.get("destination_port"))
        return {"ip": address, "port": number} if address or number else None
    if kind not in HOOKS:
        return None
    args = body.get("args")
    if not isinstance(args, list):
        return None
    for arg in args:
        if not isinstance(arg, dict):
            continue
        sock = arg.get("sock_arg") or arg.get("skb_arg")
        if isinstance(sock, dict):
            address, number = f.ip(sock.get("daddr")), f.port(sock.get("dport"))
        else:
            sockaddr = arg.get("sockaddr_arg")
            if not isinstance(sockaddr, dict):
                continue
            address, number = f.ip(sockaddr.get("addr")), f.port(sockaddr.get("port"))
        if address is not None or number is not None:
            return {"ip": address, "port": number}
    return None


def _severity(kind: str, body: dict[str, Any]) -> Severity:
    if kind not in HOOKS:
        return Severity.INFO
    action = body.get("action")
    if isinstance(action, str) and action.rpartition("_ACTION_")[2] in _ENFORCING:
        return Severity.MEDIUM
    return Severity.LOW


def _event_time(raw: dict[str, Any], kind: str, process: dict[str, Any]) -> Any:
    value = raw.get("time")
    if value is None and kind == "process_exec":
        return process.get("start_time")
    return value


def convert(raw: Any, cluster: str) -> SecurityEvent:
    if not isinstance(raw, dict):
        raise AdapterError(f"event is not a JSON object (got {f.type_name(raw)})")
    kind = _kind(raw)
    body = raw[kind]
    if not isinstance(body, dict):
        raise AdapterError(f"{kind} is not an object")
    process = body.get("process")
    if not isinstance(process, dict):
        raise AdapterError(f"{kind}.process is missing")
    time_value = _event_time(raw, kind, process)
    event_time = f.parse_time(time_value, "time")
    parent = f.obj(body.get("parent"))
    pod = f.obj(process.get("pod"))
    container = f.obj(pod.get("container"))
    image = f.obj(container.get("image"))
    binary = f.text(process.get("binary"))
    arguments = f.text(process.get("arguments"))
    hook = _hook(kind, body)
    policy = f.text(body.get("policy_name"))
    exec_id = f.text(process.get("exec_id"))
    if exec_id:
        event_id = f.stable_id(SOURCE, kind, exec_id, str(time_value), hook or "", policy or "")
    else:
        event_id = f.stable_id(SOURCE, orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode())
    owner = f.text(pod.get("workload"))
    command = " ".join(part for part in (binary, arguments) if part)
    message = f"{hook or kind}: {command}" if command else hook or kind
    data = {
        "id": event_id,
        "source": SOURCE,
        "category": kind,
        "severity": _severity(kind, body),
        "event_time": event_time,
        "message": f.shorten(message),
        "workload": {
            "cluster": f.text(raw.get("cluster_name")) or cluster,
            "namespace": f.text(pod.get("namespace")),
            "owner_kind": (f.text(pod.get("workload_kind")) or "Workload") if owner else None,
            "owner_name": owner,
            "pod": f.text(pod.get("name")),
            "container": f.text(container.get("name")),
            "container_id": f.container_id(f.text(container.get("id"))),
            "image": f.text(image.get("name")),
            "image_digest": f.image_digest(f.text(image.get("id"))),
        },
        "process": {
            "name": f.basename(binary),
            "path": binary,
            "pid": f.pid(process.get("pid")),
            "parent_path": f.text(parent.get("binary")),
        },
        "network": _network(kind, body),
        "raw": raw,
    }
    return f.validate_event(data)


register(
    "tetragon",
    "Tetragon JSON export events (process_exec, process_exit, process_kprobe, ...)",
    convert,
    __name__,
)

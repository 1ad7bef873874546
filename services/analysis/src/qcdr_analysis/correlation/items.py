"""What the engine matches: one *item* per event, enriched with what other detectors said about it.

The ATT&CK techniques most steps ask for live on findings (``attack_rules`` tags Tetragon events;
raw Tetragon events carry none), while process ancestry, arguments and the node live on the raw
event. So an event and the single-event findings raised on it in the same batch become **one**
item: the event's fields, the union of categories and techniques, the highest severity. One
occurrence is then one item and cannot advance a chain twice through two inputs. A finding whose
evidence is not in the batch (a Qualys detection, a multi-event anomaly) is an item of its own,
identified by its evidence event ids.

Items are plain slotted objects holding only what matching and join keys need, so the buffer and
the snapshot stay small.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from qcdr_common.contracts.events.v1 import NetworkDestination, ProcessInfo, SecurityEvent, Workload
from qcdr_common.contracts.findings.v1 import Finding

from qcdr_analysis.correlation.patterns import JoinKey

_TETRAGON_KINDS = ("process_exec", "process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm")
_TETRAGON_LEGACY = ("process_connect", "process_close", "process_listen", "process_exit")


@dataclass(slots=True)
class Item:
    uid: str  # redelivery identity: the event id, or "finding:<id>" for a standalone finding
    evidence: tuple[str, ...]  # event ids this item stands for
    source: str
    time: float  # event time, POSIX seconds
    categories: tuple[str, ...]
    techniques: tuple[str, ...]
    severity: int  # Severity.rank
    path: str = ""
    name: str = ""
    parent_path: str = ""
    args: str = ""
    dest_ip: str = ""
    dest_port: int = -1
    dest_domain: str = ""
    cluster: str = ""
    namespace: str = ""
    pod: str = ""
    container: str = ""
    container_id: str = ""
    image_digest: str = ""
    owner_kind: str = ""
    owner_name: str = ""
    node: str = ""
    exec_id: str = ""
    parent_exec_id: str = ""
    ancestors: tuple[str, ...] = ()  # exec ids, nearest first (Tetragon --enable-process-ancestors)
    # the workload's own address when the event shows it: the source of its connection
    # (Tetragon sock_arg saddr) or of its DNS query (Hubble); what ``peer`` joins on
    own_ip: str = ""
    # cluster/namespace/pod at the destination when the event names it (a Hubble flow's
    # ``destination``): the engine learns that pod's address from it, before the pod says anything
    peer_pod: str = ""
    finding_ids: tuple[str, ...] = ()
    # detectors of the findings merged in: a pattern can ask for threat intel's verdict
    # (intel_match) rather than a heuristic rule's (attack_rules) when both use one category
    detectors: tuple[str, ...] = ()

    def technique_keys(self) -> frozenset[str]:
        """The techniques plus their parents: a step asking for T1059 finds T1059.004."""
        return _technique_keys(self.techniques)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Item:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


# Read once: ``dataclasses.fields`` rebuilds its answer on every call, once per item per checkpoint.
_FIELD_NAMES = tuple(f.name for f in fields(Item))


@lru_cache(maxsize=4096)
def _technique_keys(techniques: tuple[str, ...]) -> frozenset[str]:
    # every step's technique test asks, for every item: a handful of distinct tuples in a batch
    return frozenset(techniques) | {t.split(".", 1)[0] for t in techniques if "." in t}


def _tetragon_body(raw: dict[str, Any]) -> dict[str, Any] | None:
    for kind in (*_TETRAGON_KINDS, *_TETRAGON_LEGACY):
        body = raw.get(kind)
        if isinstance(body, dict):
            return body
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _address(value: Any) -> str:
    """A unicast address a workload can be reached at, normalised; "" for anything else
    (unspecified before the kernel picked a source, loopback, link-local, multicast)."""
    if not isinstance(value, str):
        return ""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return ""
    if address.is_unspecified or address.is_loopback or address.is_link_local or address.is_multicast:
        return ""
    return str(address)


def _tetragon_own_address(body: dict[str, Any]) -> str:
    """The local end of the first socket argument of a hook (``tcp_connect``'s ``saddr``)."""
    args = body.get("args")
    if not isinstance(args, list):
        return ""
    for arg in args:
        if isinstance(arg, dict):
            sock = arg.get("sock_arg") or arg.get("skb_arg")
            if isinstance(sock, dict):
                return _address(sock.get("saddr"))
    return ""


def _hubble_addresses(raw: dict[str, Any], cluster: str) -> tuple[str, str]:
    """(own address, ``cluster/namespace/pod`` at the destination) of a Hubble flow. The own end
    is where the adapter took the workload from: the source of a query or connection, the
    destination of a DNS reply; the destination pod counts only on a request (it was reached)."""
    flow = raw.get("flow", raw)
    if not isinstance(flow, dict):
        return "", ""
    ip = flow.get("IP")
    l7 = flow.get("l7")
    reply = (isinstance(l7, dict) and l7.get("type") == "RESPONSE") or flow.get("is_reply") is True
    own = _address(ip.get("destination" if reply else "source")) if isinstance(ip, dict) else ""
    server = flow.get("destination")
    if reply or not isinstance(server, dict) or not _text(server.get("pod_name")):
        return own, ""
    where = _text(server.get("cluster_name")) or cluster
    return own, f"{where}/{_text(server.get('namespace'))}/{server['pod_name']}"


def _where(w: Workload, p: ProcessInfo | None, n: NetworkDestination | None) -> dict[str, Any]:
    """The item fields an event and a finding both describe (process, destination, workload)."""
    path = (p.path or "") if p else ""
    return {
        "path": path,
        "name": (p.name or posixpath.basename(path)) if p else "",
        "parent_path": (p.parent_path or "") if p else "",
        "dest_ip": str(n.ip) if n and n.ip is not None else "",
        "dest_port": n.port if n and n.port is not None else -1,
        "dest_domain": (n.domain or "").lower().rstrip(".") if n else "",
        "cluster": w.cluster or "",
        "namespace": w.namespace or "",
        "pod": w.pod or "",
        "container": w.container or "",
        "container_id": w.container_id or "",
        "image_digest": w.image_digest or "",
        "owner_kind": w.owner_kind or "",
        "owner_name": w.owner_name or "",
    }


def _from_event(event: SecurityEvent) -> Item:
    w, p, n = event.workload, event.process, event.network
    item = Item(
        uid=event.id,
        evidence=(event.id,),
        source=event.source,
        time=event.event_time.timestamp(),
        categories=(event.category,),
        techniques=event.techniques,
        severity=event.severity.rank,
        **_where(w, p, n),
    )
    if not item.name and item.path:
        item.name = posixpath.basename(item.path)
    body = _tetragon_body(event.raw) if event.source == "tetragon" else None
    if body is not None:
        found = body.get("process")
        process: dict[str, Any] = found if isinstance(found, dict) else {}
        item.args = _text(process.get("arguments"))
        item.exec_id = _text(process.get("exec_id"))
        item.parent_exec_id = _text(process.get("parent_exec_id"))
        ancestors = body.get("ancestors")
        if isinstance(ancestors, list):
            item.ancestors = tuple(
                a["exec_id"] for a in ancestors if isinstance(a, dict) and isinstance(a.get("exec_id"), str)
            )
        item.node = _text(event.raw.get("node_name"))
        item.own_ip = _tetragon_own_address(body)
    elif event.source == "hubble":
        item.own_ip, peer_pod = _hubble_addresses(event.raw, item.cluster)
        # a DNS query names no address at its destination: only a flow says where the pod is
        item.peer_pod = peer_pod if item.dest_ip else ""
    return item


def _merge(item: Item, finding: Finding) -> None:
    item.categories = tuple(dict.fromkeys((*item.categories, finding.category)))
    item.techniques = tuple(sorted({*item.techniques, *finding.techniques}))
    item.severity = max(item.severity, finding.severity.rank)
    item.finding_ids = (*item.finding_ids, finding.id)
    if finding.detector not in item.detectors:
        item.detectors = (*item.detectors, finding.detector)
    if not item.path and finding.process is not None:
        item.path = finding.process.path or ""
        item.name = finding.process.name or posixpath.basename(item.path)


def _from_finding(finding: Finding) -> Item:
    w, p, n = finding.workload, finding.process, finding.network
    evidence = finding.evidence_event_ids or (finding.id,)
    return Item(
        uid=f"finding:{finding.id}",
        evidence=evidence,
        source=finding.source or finding.detector,
        time=finding.event_time.timestamp(),
        categories=(finding.category,),
        techniques=finding.techniques,
        severity=finding.severity.rank,
        **_where(w, p, n),
        finding_ids=(finding.id,),
        detectors=(finding.detector,),
    )


def items(events: Sequence[SecurityEvent], findings: Sequence[Finding] = ()) -> Iterator[Item]:
    """One item per event (with the single-event findings on it merged in), then the rest."""
    by_event: dict[str, list[Finding]] = {}
    standalone: list[Finding] = []
    ids = {e.id for e in events}
    for finding in findings:
        if len(finding.evidence_event_ids) == 1 and finding.evidence_event_ids[0] in ids:
            by_event.setdefault(finding.evidence_event_ids[0], []).append(finding)
        else:
            standalone.append(finding)
    for event in events:
        item = _from_event(event)
        for finding in by_event.get(event.id, ()):
            _merge(item, finding)
        yield item
    for finding in standalone:
        yield _from_finding(finding)


def join_candidates(item: Item, key: JoinKey) -> tuple[str, ...]:
    """The join-key values under which ``item`` may continue a chain; the first one starts one.

    Empty when the item lacks the key (it then cannot take part in that pattern).
    """
    if key is JoinKey.POD:
        return (f"{item.cluster}/{item.namespace}/{item.pod}",) if item.pod else ()
    if key is JoinKey.CONTAINER:
        if item.container_id:
            return (item.container_id,)
        return (f"{item.cluster}/{item.namespace}/{item.pod}/{item.container}",) if item.container else ()
    if key is JoinKey.EXEC:
        chain = (item.exec_id, item.parent_exec_id, *item.ancestors)
        return tuple(dict.fromkeys(x for x in chain if x))
    if key is JoinKey.IMAGE:
        return (item.image_digest,) if item.image_digest else ()
    if key is JoinKey.WORKLOAD:
        if not item.owner_name:
            return ()
        return (f"{item.cluster}/{item.namespace}/{item.owner_kind}/{item.owner_name}",)
    if key is JoinKey.NODE:
        return (f"{item.cluster}/{item.node}",) if item.node else ()
    if key is JoinKey.CLUSTER:
        return (item.cluster,) if item.cluster else ()
    if key is JoinKey.PEER:
        # continuing: the item's own address (the engine adds the one it learned for the pod)
        return (item.own_ip,) if item.own_ip else ()
    return tuple(x for x in (item.dest_domain, item.dest_ip) if x)  # IOC


def start_key(item: Item, key: JoinKey, candidates: tuple[str, ...]) -> str | None:
    """The join-key value a chain started by ``item`` is kept under: its destination for ``peer``
    (the next step happens at that address), otherwise the first candidate."""
    if key is JoinKey.PEER:
        return item.dest_ip or None
    return candidates[0] if candidates else None

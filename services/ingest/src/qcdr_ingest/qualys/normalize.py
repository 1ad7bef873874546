"""Qualys CDR finding (raw dict) -> ``SecurityEvent``.

Field rules, and where they fix the original:

* ``uuid`` -> ``id``; ``threatCategory`` -> ``category``; ``eventMessage`` -> ``message``.
* ``severity``: 0 -> info, 1 low, 2 medium, 3 high, 4 and 5 critical (the 1-5 scale the original
  used). 6-10 only make sense on the 0-10 scale the original's demo printed; they map to critical
  so that a larger number never yields a lower severity. The words LOW/MEDIUM/HIGH/CRITICAL are
  accepted too. Anything else makes the finding malformed instead of defaulting to MEDIUM.
* ``timestamp``: ISO 8601 with ``Z`` or an offset, or epoch milliseconds; always aware UTC. A
  timestamp without a zone is malformed (guessing the zone would shift events by hours).
* ``containerName`` -> ``workload.container`` and ``containerId`` -> ``container_id`` (the original
  filled the id from the name); ``deploymentName`` is the owning Deployment, not the cluster.
* namespace from ``namespace`` or the pod labels (``io.kubernetes.pod.namespace``).
* the network destination comes only from ``destinationIp``/``destinationPort`` and
  ``networkInformation.*``. ``triggeredResource``/``affectedResource`` are never used: they may name
  the victim, and blocking the victim is how the original could cut off its own workloads.
  Unparseable IPs, ports and domains are dropped, not fatal.
* MITRE ids come from the keys of ``mitreRulesInfo`` or from a list of ``{"technique": id}``;
  ids that are not ATT&CK technique ids are skipped and counted in ``invalid_techniques``.

This runs over every finding of a fetch (100k in the benchmark), so the event is assembled as plain
dicts and validated once by pydantic's compiled validator, which is several times faster than
building the nested models one by one in Python.
"""

from __future__ import annotations

import gc
import posixpath
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from qcdr_common.contracts.events.v1 import (
    NetworkDestination,
    ProcessInfo,
    SecurityEvent,
    Severity,
    Workload,
)

from qcdr_ingest.events import fields

SOURCE = "qualys"
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"

_BY_NUMBER = (Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH) + (Severity.CRITICAL,) * 7
_BY_WORD = {
    "LOW": Severity.LOW,
    "MEDIUM": Severity.MEDIUM,
    "HIGH": Severity.HIGH,
    "CRITICAL": Severity.CRITICAL,
}
_TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?", re.ASCII)
_DOMAIN = re.compile(r"(?=.{3,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{1,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RUNTIME_PREFIXES = ("containerd://", "docker://", "cri-o://", "crio://")
# Epoch milliseconds between 2000-01-01 and 2200-01-01; outside that it is seconds or garbage.
_MS_MIN, _MS_MAX = 946_684_800_000, 7_258_118_400_000


class MalformedFindingError(ValueError):
    """The finding cannot become an event; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MalformedRecord:
    id_or_index: str | int  # the uuid when there is one, else the position in the input
    reason: str


@dataclass(slots=True)
class NormalizeResult:
    events: list[SecurityEvent] = field(default_factory=list)
    malformed: list[MalformedRecord] = field(default_factory=list)
    invalid_techniques: Counter[str] = field(default_factory=Counter)


def _type(value: Any) -> str:
    return type(value).__name__


# Optional string fields, read in one pass (one call per finding instead of one per field).
_TEXT_FIELDS = (
    "eventMessage",
    "clusterName",
    "namespace",
    "deploymentName",
    "pod",
    "containerName",
    "containerId",
    "imageName",
    "imageDigest",
    "imageSha",
    "processName",
    "processPath",
)


def _texts(raw: dict[str, Any]) -> dict[str, str | None]:
    """Each optional string field stripped, blank as None; a non-string makes the finding malformed."""
    found: dict[str, str | None] = {}
    get = raw.get
    for key in _TEXT_FIELDS:
        value = get(key)
        if value is not None:
            if not isinstance(value, str):
                raise MalformedFindingError(f"{key} must be a string, got {_type(value)}")
            # Interned: 100k findings repeat a few hundred namespaces, pods, images and paths.
            value = sys.intern(value.strip()) if value.strip() else None
        found[key] = value
    return found


def parse_severity(value: Any) -> Severity:
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 10:
            return _BY_NUMBER[value]
        raise MalformedFindingError(f"severity {value} is outside 0-10")
    if isinstance(value, str):
        text = value.strip()
        if fields.ascii_digits(text) and int(text) <= 10:
            return _BY_NUMBER[int(text)]
        found = _BY_WORD.get(text.upper())
        if found is not None:
            return found
        raise MalformedFindingError(f"unknown severity {text[:40]!r}")
    if value is None:
        raise MalformedFindingError("severity is missing")
    raise MalformedFindingError(f"severity must be a number 0-10 or a word, got {_type(value)}")


def parse_timestamp(value: Any) -> datetime:
    """Aware UTC datetime from ISO 8601 (``Z`` or offset) or epoch milliseconds."""
    if isinstance(value, str):
        text = value.strip()
        if fields.ascii_digits(text):
            return _from_millis(int(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise MalformedFindingError(f"timestamp {text[:40]!r} is not ISO 8601") from None
        offset = moment.utcoffset()
        if offset is None:
            raise MalformedFindingError(f"timestamp {text[:40]!r} has no time zone")
        try:
            return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
        except OverflowError:  # "0001-01-01T00:00:00+01:00" is before year 1 in UTC
            raise MalformedFindingError(f"timestamp {text[:40]!r} is out of range") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _from_millis(value)
    if value is None:
        raise MalformedFindingError("timestamp is missing")
    raise MalformedFindingError(f"timestamp must be a string or epoch milliseconds, got {_type(value)}")


def _from_millis(value: float) -> datetime:
    if not _MS_MIN <= value < _MS_MAX:
        raise MalformedFindingError(f"timestamp {value} is not plausible epoch milliseconds")
    return datetime.fromtimestamp(value / 1000, UTC)


def parse_techniques(value: Any, invalid: list[str] | None = None) -> tuple[str, ...]:
    """Technique ids from ``mitreRulesInfo``: the keys of an object, or a list of ``{technique}``."""
    if value is None:
        return ()
    candidates: Iterable[Any]
    if isinstance(value, dict):
        candidates = value.keys()
    elif isinstance(value, list):
        candidates = (item.get("technique") if isinstance(item, dict) else item for item in value)
    elif isinstance(value, str):
        candidates = value.split(",")
    else:
        if invalid is not None:
            invalid.append(f"<{_type(value)}>")
        return ()
    found: set[str] = set()
    for candidate in candidates:
        technique = _technique(candidate) if isinstance(candidate, str) else None
        if technique is not None:
            found.add(technique)
        elif invalid is not None:
            invalid.append(str(candidate)[:40])
    return tuple(sorted(found))


# The same few technique ids, addresses and domains recur across findings: parse each once.
@lru_cache(maxsize=4096)
def _technique(text: str) -> str | None:
    candidate = text.strip().upper()
    return candidate if _TECHNIQUE.fullmatch(candidate) else None


@lru_cache(maxsize=16384)
def _domain_text(value: str) -> str | None:
    text = value.strip().lower().rstrip(".")
    return text if _DOMAIN.fullmatch(text) and fields.ip(text) is None else None


def _domain(value: Any) -> str | None:
    return _domain_text(value) if isinstance(value, str) else None


def _network(raw: dict[str, Any]) -> dict[str, Any] | None:
    info = raw.get("networkInformation")
    if not isinstance(info, dict):
        info = {}
    address = (
        fields.ip(raw.get("destinationIp"))
        or fields.ip(info.get("destinationIp"))
        or fields.ip(info.get("remoteIp"))
    )
    port = (
        fields.port(raw.get("destinationPort"))
        or fields.port(info.get("destinationPort"))
        or fields.port(info.get("remotePort"))
    )
    domain = _domain(info.get("domain")) or _domain(info.get("destinationDomain"))
    if address is None and port is None and domain is None:
        return None
    return {"ip": address, "port": port, "domain": domain}


def _namespace(raw: dict[str, Any], namespace: str | None) -> str | None:
    if namespace:
        return namespace
    labels = raw.get("podLabels")
    value: Any = None
    if isinstance(labels, dict):
        value = labels.get(NAMESPACE_LABEL)
    elif isinstance(labels, list):
        for label in labels:
            if isinstance(label, dict) and label.get("key") == NAMESPACE_LABEL:
                value = label.get("value")
                break
            if isinstance(label, str) and label.startswith(NAMESPACE_LABEL + "="):
                value = label.partition("=")[2]
                break
    if value is None:
        value = raw.get(NAMESPACE_LABEL)
    return value.strip() or None if isinstance(value, str) else None


def _container_id(value: str | None) -> str | None:
    if value:
        for prefix in _RUNTIME_PREFIXES:
            if value.startswith(prefix):
                return value[len(prefix) :] or None
    return value


def _digest(value: str | None, image: str | None) -> str | None:
    if value is None and image and "@" in image:
        value = image.rpartition("@")[2]
    if value is not None and _HEX64.fullmatch(value.lower()):
        return f"sha256:{value.lower()}"
    return value


def _workload(raw: dict[str, Any], text: dict[str, str | None], cluster: str | None) -> dict[str, Any]:
    owner = text["deploymentName"]
    image = text["imageName"]
    return {
        "cluster": text["clusterName"] or cluster,
        "namespace": _namespace(raw, text["namespace"]),
        "owner_kind": "Deployment" if owner else None,
        "owner_name": owner,
        "pod": text["pod"],
        "container": text["containerName"],
        "container_id": _container_id(text["containerId"]),
        "image": image,
        "image_digest": _digest(text["imageDigest"] or text["imageSha"], image),
    }


def _process(text: dict[str, str | None]) -> dict[str, Any] | None:
    name, path = text["processName"], text["processPath"]
    if name is None and path is None:
        return None
    # Policies match binaries by name, so derive it from the path when only the path is given.
    return {"name": name or posixpath.basename(path or "") or None, "path": path}


def normalize_finding(
    raw: dict[str, Any],
    *,
    cluster: str | None = None,
    invalid_techniques: list[str] | None = None,
    keep_raw: bool = True,
) -> SecurityEvent:
    """One finding as an event; ``MalformedFindingError`` when it cannot be one.

    ``keep_raw=False`` leaves ``raw`` empty, for callers (once-mode policy generation) that never
    read it: the raw finding is most of an event's memory.
    """
    if not isinstance(raw, dict):
        raise MalformedFindingError(f"finding is not an object (got {_type(raw)})")
    uuid = raw.get("uuid")
    if not isinstance(uuid, str) or not uuid.strip():
        raise MalformedFindingError(
            "uuid is missing or empty" if uuid is None or isinstance(uuid, str) else "uuid is not a string"
        )
    category = raw.get("threatCategory")
    if not isinstance(category, str) or not category.strip():
        raise MalformedFindingError("threatCategory is missing or empty")
    text = _texts(raw)
    try:
        data = {
            "id": uuid.strip(),
            "source": SOURCE,
            "category": sys.intern(category.strip()),
            "severity": parse_severity(raw.get("severity")),
            "event_time": parse_timestamp(raw.get("timestamp")),
            "message": text["eventMessage"],
            "workload": _shared(Workload, _workload(raw, text, cluster)),
            "process": _shared(ProcessInfo, _process(text)),
            "network": _shared(NetworkDestination, _network(raw)),
            "techniques": parse_techniques(raw.get("mitreRulesInfo"), invalid_techniques),
            "raw": raw if keep_raw else {},
        }
        return SecurityEvent.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise MalformedFindingError(f"{where}: {error['msg']}") from None


# Findings repeat the same pods, processes and destinations; frozen models can be shared between
# events, which saves three model objects per event (most of an event's memory at 100k findings).
_SHARED_LIMIT = 65_536
_shared_models: dict[tuple[type[BaseModel], tuple[Any, ...]], BaseModel] = {}
_M = TypeVar("_M", bound=BaseModel)


def _shared(model: type[_M], fields: dict[str, Any] | None) -> _M | None:
    if fields is None:
        return None
    key = (model, tuple(fields.values()))
    found = _shared_models.get(key)
    if found is None:
        found = model.model_validate(fields)
        if len(_shared_models) < _SHARED_LIMIT:
            _shared_models[key] = found
    return found  # type: ignore[return-value]


def normalize_all(
    raws: Iterable[Any], cluster: str | None = None, *, keep_raw: bool = True
) -> NormalizeResult:
    """Events for every usable finding; the rest listed with a reason, never dropped silently."""
    result = NormalizeResult()
    invalid: list[str] = []
    events, malformed = result.events, result.malformed
    # This loop only allocates acyclic objects, yet with a large live heap (100k raw findings) the
    # cyclic GC keeps rescanning everything and more than halves throughput. Pause it meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index, raw in enumerate(raws):
            try:
                events.append(
                    normalize_finding(raw, cluster=cluster, invalid_techniques=invalid, keep_raw=keep_raw)
                )
            except MalformedFindingError as exc:
                uuid = raw.get("uuid") if isinstance(raw, dict) else None
                ident: str | int = uuid.strip() if isinstance(uuid, str) and uuid.strip() else index
                malformed.append(MalformedRecord(ident, exc.reason))
    finally:
        if gc_was_enabled:
            gc.enable()
    result.invalid_techniques.update(invalid)
    return result

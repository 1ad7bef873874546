"""A completed chain as a ``Finding`` (``kind=chain``), with its confidence.

Confidence (0..1) = 0.5 x coverage + 0.25 x timing + 0.25 x severity:

* coverage: per step, 1 when the step asked for ATT&CK techniques (the evidence carried one of
  them: a detector vouched for it), 0.75 when the step matched raw fields only (process, arguments,
  ports: a weaker, look-alike-prone signal); averaged over the steps.
* timing: 1 for steps in quick succession, falling linearly to 0.5 at a span of ``maxspan``.
* severity: the pattern's severity and the most severe evidence, on the 0..1 severity scale.

Where: ``workload`` is the last step's (where the chain completed), except for a cross-cluster
pattern (``distinct_clusters``), whose finding stands in the first step's workload and cluster
(where it began); ``attributes.clusters`` lists every cluster and each step names its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qcdr_common.contracts.events.v1 import Severity, Workload
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis import attack
from qcdr_analysis.correlation.patterns import Pattern

DETECTOR = "correlation"
_TOP = Severity.CRITICAL.rank


@dataclass(slots=True)
class Hit:
    """One step of a chain: the item that took it."""

    step: str
    event_id: str
    time: float
    techniques: tuple[str, ...]
    evidence: tuple[str, ...]
    severity: int
    source: str
    finding_ids: tuple[str, ...]
    workload: dict[str, str]


def natural_key(pattern: str, key: str, first_event_id: str) -> str:
    return f"{pattern}\x1f{key}\x1f{first_event_id}"


def chain_id(pattern: str, key: str, first_event_id: str) -> str:
    digest = hashlib.sha256(f"{DETECTOR}\x1e{natural_key(pattern, key, first_event_id)}".encode())
    return f"f-{digest.hexdigest()[:32]}"


def _step_techniques(wanted: tuple[str, ...], seen: tuple[str, ...]) -> list[str]:
    """The evidence techniques a step asked for (``T1059.004`` answers ``T1059``)."""
    if not wanted:
        return list(seen)
    return [t for t in seen if t in wanted or t.split(".", 1)[0] in wanted]


def confidence(pattern: Pattern, hits: list[Hit], maxspan: float) -> float:
    coverage = sum(1.0 if step.technique else 0.75 for step in pattern.steps) / len(pattern.steps)
    span = hits[-1].time - hits[0].time
    timing = 1.0 - 0.5 * min(span / maxspan, 1.0) if maxspan > 0 else 1.0
    severity = (pattern.severity.rank + max(h.severity for h in hits)) / (2 * _TOP)
    return round(0.5 * coverage + 0.25 * timing + 0.25 * severity, 2)


def chain_finding(pattern: Pattern, key: str, hits: list[Hit], maxspan: float) -> Finding:
    techniques: list[str] = []
    for step, hit in zip(pattern.steps, hits, strict=True):
        techniques.extend(_step_techniques(step.technique, hit.techniques))
    techniques = sorted(set(techniques))
    evidence = tuple(dict.fromkeys(e for h in hits for e in h.evidence))
    clusters = sorted({h.workload["cluster"] for h in hits if "cluster" in h.workload})
    last = hits[-1]
    where = hits[0] if pattern.distinct_clusters else last
    flow = " -> ".join(
        f"{h.step} ({', '.join(h.techniques) or 'no technique'}"
        + (f"; cluster {h.workload.get('cluster')}" if pattern.distinct_clusters else "")
        + ")"
        for h in hits
    )
    names = [f"{t} {attack.name(t) or ''}".strip() for t in techniques]
    steps: list[dict[str, Any]] = [
        {
            "name": h.step,
            "event_id": h.event_id,
            "event_time": datetime.fromtimestamp(h.time, UTC).isoformat(),
            "techniques": list(h.techniques),
            "finding_ids": list(h.finding_ids),
            "cluster": h.workload.get("cluster"),
            # where the step happened: the chain's workload is one step's, and the steps of a
            # lateral movement or cross-cluster chain happen in different workloads
            "workload": dict(h.workload),
        }
        for h in hits
    ]
    return Finding(
        id=chain_id(pattern.name, key, hits[0].event_id),
        kind=FindingKind.CHAIN,
        detector=DETECTOR,
        category=f"chain.{pattern.name}",
        severity=pattern.severity,
        techniques=tuple(techniques),
        title=pattern.title or pattern.name.replace("_", " "),
        explanation=f"{flow} within {int(last.time - hits[0].time)} s on {pattern.join.value} {key}"
        + (f"; techniques: {'; '.join(names)}" if names else ""),
        event_time=datetime.fromtimestamp(last.time, UTC),
        evidence_event_ids=evidence,
        workload=Workload(**where.workload),
        source=hits[0].source,
        attributes={
            "pattern": pattern.name,
            "natural_key": natural_key(pattern.name, key, hits[0].event_id),
            "steps": steps,
            "confidence": confidence(pattern, hits, maxspan),
            "join": {"key": pattern.join.value, "value": key},
            "clusters": clusters,
            "span_seconds": round(last.time - hits[0].time, 3),
        },
    )


def hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "step": hit.step,
        "event_id": hit.event_id,
        "time": hit.time,
        "techniques": list(hit.techniques),
        "evidence": list(hit.evidence),
        "severity": hit.severity,
        "source": hit.source,
        "finding_ids": list(hit.finding_ids),
        "workload": hit.workload,
    }


def hit_from_json(data: dict[str, Any]) -> Hit:
    return Hit(
        step=data["step"],
        event_id=data["event_id"],
        time=data["time"],
        techniques=tuple(data["techniques"]),
        evidence=tuple(data["evidence"]),
        severity=data["severity"],
        source=data["source"],
        finding_ids=tuple(data["finding_ids"]),
        workload=data["workload"],
    )

"""``source``: a detection the source already made becomes exactly one finding.

Each Qualys CDR finding and each Falco alert is a conclusion, not an observation: it keeps the
source's category, severity and techniques, and its id is derived from the event alone, so the
same alert delivered twice is one finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis.detectors import Detector, DetectorConfig, finding_id, register

NAME = "source"
_TITLE_CHARS = 300


class Config(DetectorConfig):
    sources: frozenset[str] = frozenset({"qualys", "falco"})


def detect(events: Sequence[SecurityEvent], config: Config, _lookup: Any = None) -> list[Finding]:
    findings = []
    for event in events:
        if event.source not in config.sources:
            continue
        message = (event.message or "").strip()
        findings.append(
            Finding(
                id=finding_id(NAME, (event,)),
                kind=FindingKind.SOURCE,
                detector=NAME,
                category=event.category,
                severity=event.severity,
                techniques=event.techniques,
                title=message[:_TITLE_CHARS] or event.category,
                explanation=f"{event.source} reported {event.category} ({event.severity.value})",
                event_time=event.event_time,
                evidence_event_ids=(event.id,),
                workload=event.workload,
                process=event.process,
                network=event.network,
                source=event.source,
            )
        )
    return findings


def setup(config: Config) -> Config:
    return config


DETECTOR = register(Detector(name=NAME, kind=FindingKind.SOURCE, config=Config, setup=setup, detect=detect))

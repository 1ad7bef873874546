"""``attack_rules``: Tetragon events matched against the declarative ATT&CK rule set.

The rules are data (``detectors/rules/tetragon.yaml``, or ``rules_file``), loaded and validated
once at start. An event that matches becomes one finding: the most severe matching rule (the first
in the file on a tie) names it and gives its category; the techniques of every matching rule, and
the event's own, are kept, and ``attributes.rules`` lists all of them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcdr_common.contracts.events.v1 import ProcessInfo, SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis.detectors import Detector, DetectorConfig, register
from qcdr_analysis.rulefiles import rules_finding
from qcdr_analysis.tetragon.rules import Rule, RuleSet, load_rules
from qcdr_analysis.tetragon.view import TetragonView, view

NAME = "attack_rules"
_ARGUMENT_CHARS = 1000


class Config(DetectorConfig):
    rules_file: Path | None = None  # None: the rule set shipped in the package
    sources: frozenset[str] = frozenset({"tetragon"})


@dataclass(frozen=True)
class State:
    rules: RuleSet
    sources: frozenset[str]


def setup(config: Config) -> State:
    return State(load_rules(config.rules_file), config.sources)


def _process(event: SecurityEvent, v: TetragonView) -> ProcessInfo | None:
    if event.process is not None or not v.binary:
        return event.process
    return ProcessInfo(
        name=posixpath.basename(v.binary) or None, path=v.binary, parent_path=v.parent_binary or None
    )


def _finding(event: SecurityEvent, v: TetragonView, matched: list[Rule]) -> Finding:
    command = " ".join(part for part in (v.binary, v.arguments) if part)[:_ARGUMENT_CHARS]
    hook = f" in {v.function}" if v.function else ""
    attributes: dict[str, Any] = {
        "event_type": v.type,
        "binary": v.binary,
        "arguments": v.arguments[:_ARGUMENT_CHARS],
    }
    if v.function:
        attributes["function"] = v.function
    if v.file_paths:
        attributes["file_paths"] = list(v.file_paths[:20])
    if v.destination_port is not None:
        attributes["destination"] = f"{v.destination_ip}:{v.destination_port}"
    return rules_finding(
        NAME,
        event,
        matched,
        what=f"{command or 'a process'}{hook}",
        attributes=attributes,
        process=_process(event, v),
        network=event.network,
    )


def detect(events: Sequence[SecurityEvent], state: State, _lookup: Any = None) -> list[Finding]:
    findings = []
    for event in events:
        if event.source not in state.sources:
            continue
        v = view(event)
        matched = state.rules.matching(v)
        if matched:
            findings.append(_finding(event, v, matched))
    return findings


DETECTOR = register(
    Detector(name=NAME, kind=FindingKind.ATTACK_TECHNIQUE, config=Config, setup=setup, detect=detect)
)

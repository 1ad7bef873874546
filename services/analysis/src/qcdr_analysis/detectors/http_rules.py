"""``http_rules``: HTTP requests pods make (``http_request`` events) matched against ATT&CK rules.

The rules are data (``detectors/rules/http.yaml``, or ``rules_file``), loaded and validated once at
start. As with ``attack_rules``, an event that matches becomes one finding named by its most
severe rule, with the techniques of every matching rule; ``attributes`` carry the method, the URL
without its query string, the user agent and the rule ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis.detectors import Detector, DetectorConfig, register
from qcdr_analysis.http.rules import Rule, RuleSet, load_rules
from qcdr_analysis.http.view import HttpView, view
from qcdr_analysis.rulefiles import rules_finding

NAME = "http_rules"


class Config(DetectorConfig):
    rules_file: Path | None = None  # None: the rule set shipped in the package


def setup(config: Config) -> RuleSet:
    return load_rules(config.rules_file)


def _finding(event: SecurityEvent, v: HttpView, matched: list[Rule]) -> Finding:
    denied = " (denied by an L7 policy)" if v.verdict == "DROPPED" else ""
    attributes: dict[str, Any] = {
        "method": v.method,
        "url": v.shown_url,
        "user_agent": v.user_agent[:200],
        "verdict": v.verdict,
    }
    what = f"{v.method} {v.shown_url}"[:1000] + denied
    return rules_finding(
        NAME, event, matched, what=what, attributes=attributes, process=event.process, network=event.network
    )


def detect(events: Sequence[SecurityEvent], rules: RuleSet, _lookup: Any = None) -> list[Finding]:
    findings = []
    for event in events:
        v = view(event)
        if v is None:
            continue
        matched = rules.matching(v)
        if matched:
            findings.append(_finding(event, v, matched))
    return findings


DETECTOR = register(
    Detector(name=NAME, kind=FindingKind.ATTACK_TECHNIQUE, config=Config, setup=setup, detect=detect)
)

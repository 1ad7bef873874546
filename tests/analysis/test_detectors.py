"""The detector registry, the source and attack_rules detectors, and the dispatcher's isolation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import qcdr_analysis.detectors as detectors_package
import uvicorn
from qcdr_analysis.cli import cli
from qcdr_analysis.detectors import (
    DETECTORS,
    Detector,
    DetectorConfig,
    attack_rules,
    finding_id,
    load_detectors,
    source,
)
from qcdr_analysis.findings.service import ActiveDetector, DetectorConfigError, DetectorSet
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.registry import import_submodules
from typer.testing import CliRunner

from tests.analysis.conftest import make_event, tetragon_event


def test_every_detector_module_registers_exactly_one() -> None:
    load_detectors()
    modules = import_submodules(detectors_package)
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} >= {"source", "attack_rules", "intel_match"}
    for module in modules:
        registered = [name for name in DETECTORS.names() if DETECTORS.origin(name) == module.__name__]
        assert len(registered) == 1, (module.__name__, registered)
        detector = DETECTORS.get(registered[0])
        assert issubclass(detector.config, DetectorConfig)
        assert detector.config.model_config.get("extra") == "forbid"


def test_finding_ids_are_deterministic_and_order_free() -> None:
    a, b = make_event(id="a"), make_event(id="b")
    assert finding_id("x", (a, b)) == finding_id("x", (b, a))
    assert finding_id("x", (a,)) != finding_id("y", (a,))
    assert finding_id("x", (a,)) != finding_id("x", (make_event(id="a", source="qualys"),))
    assert finding_id("x", (a,)).startswith("f-")
    assert len(finding_id("x", (a,))) == 34


def test_source_detector_one_finding_per_qualys_or_falco_event() -> None:
    qualys = make_event(
        source="qualys",
        category="Container_Escape",
        severity="critical",
        techniques=["T1611", "T1068"],
        message="Container escape via nsenter",
    )
    falco = make_event(source="falco", category="Terminal shell in container", severity="low")
    tetragon = make_event(source="tetragon", category="process_exec")
    findings = source.detect([qualys, falco, tetragon], source.Config())
    assert [f.evidence_event_ids for f in findings] == [(qualys.id,), (falco.id,)]
    first = findings[0]
    assert first.kind is FindingKind.SOURCE
    assert (first.category, first.severity, first.techniques) == (
        "Container_Escape",
        Severity.CRITICAL,
        ("T1068", "T1611"),
    )
    assert first.title == "Container escape via nsenter"
    assert first.workload == qualys.workload
    assert first.source == "qualys"
    assert findings[1].severity is Severity.LOW
    assert findings[1].techniques == ("T1059",)
    assert source.detect([qualys], source.Config())[0].id == first.id  # redelivery: same id


def test_attack_rules_one_finding_per_event_most_severe_rule_first() -> None:
    state = attack_rules.setup(attack_rules.Config())
    raw = {
        "process_exec": {
            "process": {
                "binary": "/usr/bin/nsenter",
                "arguments": "-t 1 -m -u -n -i -p bash",
                "pod": {"namespace": "default", "name": "privileged-pod"},
            },
            "parent": {"binary": "/bin/bash"},
        }
    }
    event = tetragon_event(raw, techniques=["T1059"])
    (finding,) = attack_rules.detect([event], state)
    assert finding.kind is FindingKind.ATTACK_TECHNIQUE
    assert finding.severity is Severity.CRITICAL
    assert finding.title == "nsenter into the namespaces of PID 1 (the host)"
    assert finding.category == "container_escape"
    assert finding.techniques == ("T1059", "T1611")
    assert finding.attributes["rules"] == ["nsenter-host-pid1", "namespace-tool-in-container"]
    assert finding.process is not None
    assert finding.process.name == "nsenter"
    assert finding.workload.namespace == "default"
    assert attack_rules.detect([make_event()], state) == []  # falco: not this detector's


def test_attack_rules_custom_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - id: curl\n    title: curl\n    category: discovery\n"
        "    severity: low\n    techniques: [T1016]\n    match: {binary: {suffix: [/curl]}}\n"
    )
    state = attack_rules.setup(attack_rules.Config(rules_file=path))
    event = tetragon_event({"process_exec": {"process": {"binary": "/usr/bin/curl"}}})
    assert [f.title for f in attack_rules.detect([event], state)] == ["curl"]


def test_configure_rejects_unknown_detectors_keys_and_bad_rules(tmp_path: Path) -> None:
    assert DetectorSet.configure().names == [
        "attack_rules",
        "behaviour_profile",
        "dga",
        "domain_intel",
        "http_rules",
        "intel_match",
        "source",
        "workload_anomaly",
    ]
    assert DetectorSet.configure(disabled={"intel_match"}).names == [
        "attack_rules",
        "behaviour_profile",
        "dga",
        "domain_intel",
        "http_rules",
        "source",
        "workload_anomaly",
    ]
    with pytest.raises(DetectorConfigError, match="unknown detector"):
        DetectorSet.configure({"nope": {}})
    with pytest.raises(DetectorConfigError, match="unknown detector"):
        DetectorSet.configure(disabled={"nope"})
    with pytest.raises(DetectorConfigError, match=r"intel_match.*reputation_treshold"):
        DetectorSet.configure({"intel_match": {"reputation_treshold": 10}})
    with pytest.raises(DetectorConfigError, match=r"intel_match.*listed_view"):
        DetectorSet.configure({"intel_match": {"listed_view": "x; DROP TABLE y"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: [{id: x}]\n")
    with pytest.raises(DetectorConfigError, match=r"attack_rules.*bad\.yaml"):
        DetectorSet.configure({"attack_rules": {"rules_file": str(bad)}})


@pytest.mark.usefixtures("fresh_settings")
@pytest.mark.parametrize(
    ("variable", "name", "text", "reason"),
    [
        (
            "QCDR_CORRELATION_PATTERNS_DIR",
            "mine.yaml",
            "name: mine\ndescription: x\nseverity: high\nmaxspan: 99999999999d\njoin: pod\n"
            "steps: [{name: a, technique: T1059}, {name: b, technique: T1105}]\n",
            "mine.yaml: mine.maxspan: Value error, maxspan must be at most 30 days",
        ),
        (
            "QCDR_DETECTORS__ATTACK_RULES__RULES_FILE",
            "rules.yaml",
            "version: 1\n? [rules, more]\n: []\n",
            "rules.yaml: not valid YAML at line 2, column 3: found unhashable key",
        ),
    ],
    ids=["pattern maxspan beyond a timedelta", "rule file with a complex key"],
)
def test_serve_names_a_bad_pattern_or_rule_file_in_one_line(
    variable: str, name: str, text: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OverflowError (timedelta) and a TypeError (a list as a dict key) escaped the loaders,
    which ``serve`` does not take for a configuration mistake: a traceback instead of one line."""
    (tmp_path / name).write_text(text)
    monkeypatch.setenv(variable, str(tmp_path if variable.endswith("_DIR") else tmp_path / name))

    def started(*_: object, **__: object) -> None:
        raise AssertionError("the server started: the mistake was not caught when the app was built")

    monkeypatch.setattr(uvicorn, "run", started)  # what serve runs once the app is built
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("qcdr-analysis serve: configuration error: ")
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


class _NoConfig(DetectorConfig):
    pass


def _fake(name: str, detect: Any, lookup: Any = None) -> ActiveDetector:
    return ActiveDetector(
        Detector(
            name=name,
            kind=FindingKind.ANOMALY,
            config=_NoConfig,
            setup=lambda c: c,
            detect=detect,
            lookup=lookup,
        ),
        None,
    )


def _one_each(name: str) -> Any:
    def detect(events: Sequence[SecurityEvent], _state: Any, _lookup: Any) -> list[Finding]:
        return [
            Finding(
                id=finding_id(name, (e,)),
                kind=FindingKind.ANOMALY,
                detector=name,
                category="test",
                severity=Severity.LOW,
                event_time=e.event_time,
                evidence_event_ids=(e.id,),
            )
            for e in events
        ]

    return detect


async def test_dispatcher_isolates_a_failing_detector_and_a_poisonous_event() -> None:
    def broken(events: Sequence[SecurityEvent], _state: Any, _lookup: Any) -> list[Finding]:
        raise RuntimeError("bug")

    good = _one_each("good")
    picky_findings = _one_each("picky")

    def picky(events: Sequence[SecurityEvent], state: Any, lookup: Any) -> list[Finding]:
        if any(e.id == "bad" for e in events):
            raise ValueError("cannot handle this one")
        return picky_findings(events, state, lookup)

    dispatcher = DetectorSet([_fake("broken", broken), _fake("picky", picky), _fake("good", good)])
    events = [make_event(id="ok-1"), make_event(id="bad"), make_event(id="ok-2")]
    findings = await dispatcher.run(None, events)  # type: ignore[arg-type]  # no lookups: no session
    by_detector: dict[str, list[str]] = {}
    for f in findings:
        by_detector.setdefault(f.detector, []).extend(f.evidence_event_ids)
    # "broken" yields nothing, "picky" loses only the event it chokes on, "good" is untouched
    assert by_detector == {"good": ["ok-1", "bad", "ok-2"]} | {"picky": ["ok-1", "ok-2"]}

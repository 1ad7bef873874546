"""finding_to_event and routing: what the generator families see of a finding."""

from __future__ import annotations

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.policies.v1 import dump_yaml
from qcdr_response.lifecycle.generation import Scope, ScopeGenerator, finding_to_event
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.config import GenerationConfig

from tests.response.service.conftest import T0, make_finding


def test_the_event_carries_what_the_families_read() -> None:
    finding = make_finding(
        severity="critical",
        techniques=["T1046", "T1059.004"],
        network={"ip": "203.0.113.7", "port": 4444},
    )
    event = finding_to_event(finding)
    assert event.id == finding.id
    assert event.category == "Network_Scanning_Utility"
    assert event.severity is Severity.CRITICAL
    assert event.techniques == ("T1046", "T1059.004")
    assert event.workload == finding.workload
    assert event.process is not None
    assert event.process.name == "nmap"
    assert event.network is not None
    assert event.network.port == 4444
    assert event.event_time == T0
    assert event.source == "falco"
    assert event.message == "nmap run in a container"
    assert event.raw == {}


def test_free_text_techniques_are_left_out_and_the_detector_stands_in_for_a_missing_source() -> None:
    finding = make_finding(techniques=["T1611", "lateral movement", "t1046"], source="", detector="x" * 60)
    event = finding_to_event(finding)
    assert event.techniques == ("T1611",)
    assert event.source == "x" * 40
    assert finding_to_event(make_finding(title="")).message is None


def test_scope_and_generation_of_one_scope() -> None:
    config = GenerationConfig()
    gen = ScopeGenerator(config, default_checker(config))
    events = [finding_to_event(make_finding()) for _ in range(3)]
    scope = gen.scope_of(events[0])
    assert scope == Scope("network-scan", "payments")
    clusterwide = gen.scope_of(finding_to_event(make_finding(workload={})))
    assert clusterwide == Scope("network-scan", "")
    assert gen.scope_of(finding_to_event(make_finding(category="Something_Else", techniques=[]))) is None

    result = gen.generate(scope, events)
    assert result.main is not None
    assert result.main.kind == "TracingPolicyNamespaced"
    assert result.main.namespace == "payments"
    assert result.main.finding_count == 3
    # the date is the newest finding's event date: the same findings always give the same hash
    assert result.main.filename == "cdr-block-network-scan-20260301.yaml"
    again = gen.generate(scope, list(reversed(events)))
    assert again.main is not None
    assert again.main.content_hash == result.main.content_hash


def test_the_fast_yaml_is_byte_identical_to_the_contracts_yaml() -> None:
    config = GenerationConfig()
    gen = ScopeGenerator(config, default_checker(config))
    kinds = [
        ("Network_Scanning_Utility", ["T1046"], "nmap"),
        ("Container_Escape", ["T1611"], "nsenter"),
        ("Crypto_Mining", ["T1496"], "xmrig"),
        ("Reverse_Shell", ["T1059.004"], "nc"),
    ]
    checked = 0
    for category, techniques, process in kinds:
        for namespace in ("payments", ""):
            events = [
                finding_to_event(
                    make_finding(
                        category=category,
                        techniques=techniques,
                        process={"name": process, "path": f"/usr/bin/{process}"},
                        namespace=namespace,
                        title="multi\nline: title",
                    )
                )
            ]
            scope = gen.scope_of(events[0])
            assert scope is not None
            for doc in gen.generate(scope, events).documents:
                assert dump_yaml(doc.body) == dump_yaml(doc.body, pure=True)
                checked += 1
    assert checked >= 8
    tricky = {
        "a": "line1\nline2",
        "b": ["x: y", "- z", "", "yes", "0123"],
        "c": {"d": None, "e": 1.5, "f": True},
    }
    assert dump_yaml(tricky) == dump_yaml(tricky, pure=True)

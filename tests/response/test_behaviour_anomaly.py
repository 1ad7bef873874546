"""The behaviour-anomaly family: exact exec and connect selectors, audit unless the run enforces."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.config import EnforcementAction, GenerationConfig
from qcdr_response.policies.generate import GenerationResult, PolicyGenerator
from qcdr_response.policies.targets import TetragonTarget
from qcdr_response.policies.validator_tetragon import validate_tracing_policy

from tests.response.factories import make_event

FAMILY = "behaviour-anomaly"


def _process(path: str, parent: str | None = None, **kw: Any) -> SecurityEvent:
    category = "anomaly.unusual_parent" if parent else "anomaly.unknown_process"
    return make_event(
        category=category, techniques=("T1059",), process={"path": path, "parent_path": parent}, **kw
    )


def _destination(ip: str, port: int | None = None, **kw: Any) -> SecurityEvent:
    return make_event(
        category="anomaly.unknown_destination", techniques=("T1071",), network={"ip": ip, "port": port}, **kw
    )


def _events() -> list[SecurityEvent]:
    return [
        _process("/usr/local/bin/miner-x"),
        _process("/tmp/.x/payload", namespace="batch"),
        _process("/bin/bash"),  # protected: observed only
        _process("/bin/sh", parent="/usr/sbin/nginx"),
        _process("/usr/bin/curl", parent="/usr/sbin/nginx"),
        _process("/usr/bin/id", parent="/bin/bash"),  # a shell parent: observed only
        _destination("203.0.113.7", 4444),
        _destination("203.0.113.8", 4444),
        _destination("2001:db8::1", 8443),
        _destination("198.51.100.9"),  # no port: any port
        _destination("10.0.0.53", 53),  # never-block: observed only
        make_event(category="anomaly.unknown_destination", network={"domain": "evil.example"}),
        make_event(category="anomaly.rate"),
    ]


def _config(action: EnforcementAction, **kw: Any) -> GenerationConfig:
    return GenerationConfig(action=action, run_date=date(2026, 3, 1), never_block=("10.0.0.0/8",), **kw)


def _generate(action: EnforcementAction, events: list[SecurityEvent] | None = None) -> GenerationResult:
    config = _config(action)
    return PolicyGenerator(config, checker=default_checker(config)).generate(events or _events())


def _family_bodies(result: GenerationResult) -> list[dict[str, Any]]:
    return [d.body for d in result.families[FAMILY].documents]


def _selectors(body: dict[str, Any], call: str) -> list[dict[str, Any]]:
    return [s for hook in body["spec"]["kprobes"] if hook["call"] == call for s in hook["selectors"]]


def _actions(selector: dict[str, Any]) -> set[str]:
    return {a["action"] for a in selector["matchActions"]}


@pytest.mark.parametrize("action", list(EnforcementAction))
@pytest.mark.parametrize(("tetragon", "kernel"), [("1.4", "5.10"), ("1.5", "5.10"), ("1.7", "6.8")])
def test_every_document_validates(
    action: EnforcementAction, tetragon: str, kernel: str, shared_path: Path
) -> None:
    config = GenerationConfig(
        action=action, tetragon_version=tetragon, kernel_version=kernel, never_block=("10.0.0.0/8",)
    )
    result = PolicyGenerator(config, checker=default_checker(config)).generate(_events())
    assert not [r for r in result.refusals if r.outcome == "dropped"]
    validator = ManifestValidator(shared_path)
    target = TetragonTarget(version=tetragon, kernel=kernel)
    bodies = _family_bodies(result)
    assert bodies
    for body in bodies:
        assert validator.errors(body) == [], body["metadata"]["name"]
        assert [i for i in validate_tracing_policy(body, target) if i.severity == "error"] == []


def test_audit_by_default_with_exact_paths_pairs_and_addresses() -> None:
    result = _generate(EnforcementAction.POST)
    docs = {d.namespace: d.body for d in result.families[FAMILY].documents}
    assert set(docs) == {"payments", "batch"}
    body = docs["payments"]
    assert body["kind"] == "TracingPolicyNamespaced"
    execs = _selectors(body, "sys_execve")
    connects = _selectors(body, "tcp_connect")
    assert all(_actions(s) == {"Post"} for s in execs + connects)
    exact = [s for s in execs if "matchBinaries" not in s]
    assert sorted(v for s in exact for v in s["matchArgs"][0]["values"]) == [
        "/bin/bash",
        "/usr/local/bin/miner-x",
    ]
    assert all(s["matchArgs"][0]["operator"] == "Equal" for s in execs)
    pairs = {
        (b, v)
        for s in execs
        if "matchBinaries" in s
        for b in s["matchBinaries"][0]["values"]
        for v in s["matchArgs"][0]["values"]
    }
    assert pairs == {
        ("/usr/sbin/nginx", "/bin/sh"),
        ("/usr/sbin/nginx", "/usr/bin/curl"),
        ("/bin/bash", "/usr/bin/id"),
    }
    matched = {
        (
            tuple(s["matchArgs"][0]["values"]),
            tuple(s["matchArgs"][1]["values"]) if len(s["matchArgs"]) > 1 else (),
        )
        for s in connects
    }
    assert matched == {
        (("203.0.113.7/32", "203.0.113.8/32"), ("4444",)),
        (("2001:db8::1/128",), ("8443",)),
        (("198.51.100.9/32",), ()),
        (("10.0.0.53/32",), ("53",)),
    }
    # the domain-only and the rate findings add nothing: rate is unmapped, the domain has no selector
    assert result.unmapped["anomaly.rate"].count == 1
    assert docs["batch"]["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["values"] == [
        "/tmp/.x/payload"
    ]


def test_sigkill_enforces_only_what_is_safe_to_enforce() -> None:
    result = _generate(EnforcementAction.SIGKILL)
    body = next(b for b in _family_bodies(result) if b["metadata"]["namespace"] == "payments")
    assert "enforcement-refused" not in str(body["metadata"]["annotations"])
    by_value: dict[str, set[str]] = {}
    for s in _selectors(body, "sys_execve") + _selectors(body, "tcp_connect"):
        for v in s["matchArgs"][0]["values"]:
            key = v if "matchBinaries" not in s else f"{s['matchBinaries'][0]['values'][0]}>{v}"
            by_value.setdefault(key, set()).update(_actions(s))
    assert by_value["/usr/local/bin/miner-x"] == {"Sigkill"}
    assert by_value["/usr/sbin/nginx>/bin/sh"] == {"Sigkill"}
    assert by_value["203.0.113.7/32"] == {"Sigkill"}
    assert by_value["2001:db8::1/128"] == {"Sigkill"}
    # shells, shell parents and never-block addresses are only ever observed
    assert by_value["/bin/bash"] == {"Post"}
    assert by_value["/bin/bash>/usr/bin/id"] == {"Post"}
    assert by_value["10.0.0.53/32"] == {"Post"}


def test_override_goes_to_exec_and_lsm_connect_hooks() -> None:
    result = _generate(EnforcementAction.OVERRIDE)
    bodies = _family_bodies(result)
    override = next(
        b
        for b in bodies
        if b["metadata"]["name"].endswith("-override") and b["metadata"]["namespace"] == "payments"
    )
    calls = {h["call"] for h in override["spec"]["kprobes"]}
    assert calls == {"sys_execve", "security_socket_connect"}
    connects = _selectors(override, "security_socket_connect")
    assert {v for s in connects for v in s["matchArgs"][0]["values"]} == {
        "203.0.113.7/32",
        "203.0.113.8/32",
        "2001:db8::1/128",
        "198.51.100.9/32",
    }
    assert all(s["matchArgs"][0]["operator"] == "SAddr" and _actions(s) == {"Override"} for s in connects)
    main = next(b for b in bodies if b["metadata"]["name"] == "cdr-block-behaviour-anomaly")
    assert all(_actions(s) == {"Post"} for h in main["spec"]["kprobes"] for s in h["selectors"])


def test_many_findings_stay_within_tetragon_limits(shared_path: Path) -> None:
    events = [_process(f"/opt/app/bin/tool{i}") for i in range(150)]
    events += [_process(f"/opt/app/bin/child{i}", parent=f"/opt/app/bin/parent{i}") for i in range(30)]
    events += [_destination(f"198.51.100.{i}", 1000 + i) for i in range(40)]
    result = _generate(EnforcementAction.SIGKILL, events)
    assert not [r for r in result.refusals if r.outcome == "dropped"]
    (body,) = _family_bodies(result)
    assert all(len(h["selectors"]) <= 5 for h in body["spec"]["kprobes"])
    assert ManifestValidator(shared_path).errors(body) == []
    connects = _selectors(body, "tcp_connect")
    # overflowing (address, port) groups keep their exact addresses and forget the port
    assert {v for s in connects for v in s["matchArgs"][0]["values"]} == {
        f"198.51.100.{i}/32" for i in range(40)
    }


def test_bad_paths_are_never_matched() -> None:
    events = [_process("relative/bin"), _process("/opt/*/x"), _process("/opt/x/"), _process("/a/../b")]
    events.append(_process("/opt/ok/bin"))
    (body,) = _family_bodies(_generate(EnforcementAction.POST, events))
    assert [v for s in _selectors(body, "sys_execve") for v in s["matchArgs"][0]["values"]] == ["/opt/ok/bin"]

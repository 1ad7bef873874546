"""Drift findings of the behaviour profiler become drift-family policies that match them: the
package managers seen installing, and (observed only) writes to binary directories."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.config import EnforcementAction, GenerationConfig
from qcdr_response.policies.generate import PolicyGenerator
from qcdr_response.policies.targets import TetragonTarget
from qcdr_response.policies.validator_tetragon import validate_tracing_policy

from tests.response.factories import make_event


def _bodies(action: EnforcementAction, tetragon: str = "1.5", kernel: str = "5.10") -> list[dict[str, Any]]:
    config = GenerationConfig(
        action=action, run_date=date(2026, 3, 1), tetragon_version=tetragon, kernel_version=kernel
    )
    events = [
        make_event(category="drift.package_manager", process={"path": "/usr/bin/apt-get"}),
        make_event(category="drift.package_manager", process={"path": "/usr/local/bin/pip3"}),
        make_event(category="drift.binary_dir_write", process={"path": "/bin/cp"}),
    ]
    result = PolicyGenerator(config, checker=default_checker(config)).generate(events)
    return [d.body for d in result.families["drift"].documents]


def _selectors(body: dict[str, Any], call: str) -> list[dict[str, Any]]:
    return [s for hook in body["spec"]["kprobes"] if hook["call"] == call for s in hook["selectors"]]


def test_package_managers_and_binary_dir_writes_are_matched() -> None:
    (body,) = [b for b in _bodies(EnforcementAction.POST) if not b["metadata"]["name"].endswith("-override")]
    execs = [
        a
        for s in _selectors(body, "security_bprm_check") + _selectors(body, "sys_execve")
        for a in s.get("matchArgs", [])
    ]
    postfixes = {v for arg in execs if arg["operator"] == "Postfix" for v in arg["values"]}
    assert {"/apt-get", "/pip3"} <= postfixes
    writes = _selectors(body, "security_file_permission")
    prefixes = {v for s in writes for a in s["matchArgs"] if a["operator"] == "Prefix" for v in a["values"]}
    assert "/usr/bin/" in prefixes
    assert all({a["action"] for a in s["matchActions"]} == {"Post"} for s in writes)


@pytest.mark.parametrize("action", list(EnforcementAction))
@pytest.mark.parametrize(("tetragon", "kernel"), [("1.4", "5.10"), ("1.7", "6.8")])
def test_every_document_validates(
    action: EnforcementAction, tetragon: str, kernel: str, shared_path: Path
) -> None:
    validator = ManifestValidator(shared_path)
    target = TetragonTarget(version=tetragon, kernel=kernel)
    bodies = _bodies(action, tetragon, kernel)
    assert bodies
    for body in bodies:
        assert validator.errors(body) == [], body["metadata"]["name"]
        assert [i for i in validate_tracing_policy(body, target) if i.severity == "error"] == []


@pytest.mark.parametrize(
    ("category", "techniques"), [("dns.malicious_domain", ("T1071.004",)), ("dns.dga", ("T1568.002",))]
)
def test_dns_findings_get_no_kernel_policy(category: str, techniques: tuple[str, ...]) -> None:
    """A lookup of a bad name must not become, say, a reverse-shell policy through T1071."""
    config = GenerationConfig(action=EnforcementAction.POST, run_date=date(2026, 3, 1))
    event = make_event(category=category, techniques=techniques, network={"domain": "evil.example"})
    result = PolicyGenerator(config, checker=default_checker(config)).generate([event])
    assert result.families == {}

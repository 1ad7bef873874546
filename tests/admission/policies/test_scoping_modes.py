"""Scoping (namespaces, globs, exclusions, kinds, label selectors), modes, templates, validation,
and the PSS engine the policies are composed with."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from qcdr_admission.engine import CompositeEngine, Mode, PssConfig, PssEngine, denied
from qcdr_admission.policies.evaluate import PolicyEngine
from qcdr_admission.policies.model import AdmissionPolicy

from tests.admission.policies.factories import container, pod_subject

PRIV = {"containers": [container(securityContext={"privileged": True})]}


def hits(match: dict[str, Any], **subject: Any) -> bool:
    policy = AdmissionPolicy(name="p", match=match, checks={"privileged": True})
    return bool(PolicyEngine([policy]).evaluate(pod_subject(PRIV, **subject)))


def test_namespaces_globs_and_exclusions() -> None:
    assert hits({})
    assert hits({"namespaces": ["pay-*"]}, namespace="pay-prod")
    assert not hits({"namespaces": ["pay-*"]}, namespace="payments")
    assert not hits({"namespaces": ["pay-*"], "exclude_namespaces": ["pay-sandbox"]}, namespace="pay-sandbox")
    assert not hits({"exclude_namespaces": ["kube-*"]}, namespace="kube-system")
    assert not hits({"namespaces": ["a"]}, namespace=None)  # cluster-scoped: only unscoped policies


def test_kinds_and_selector() -> None:
    assert hits({"kinds": ["deployment"]}, kind="Deployment")
    assert not hits({"kinds": ["Pod"]}, kind="Deployment")
    selector = {
        "matchLabels": {"tier": "web"},
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
    }
    assert hits({"selector": selector}, labels={"tier": "web", "env": "prod"})
    assert not hits({"selector": selector}, labels={"tier": "web", "env": "dev"})
    assert not hits({"selector": selector}, labels={"tier": "web"})
    assert hits({"selector": {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}})
    assert not hits({"selector": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}})
    assert hits({"selector": {"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]}})


@pytest.mark.parametrize("mode", list(Mode))
def test_modes_and_disabled(mode: Mode) -> None:
    policy = AdmissionPolicy(name="p", mode=mode, checks={"privileged": True})
    results = PolicyEngine([policy]).evaluate(pod_subject(PRIV))
    assert [(r.source, r.check, r.mode) for r in results] == [("policy:p", "privileged", mode)]
    off = policy.model_copy(update={"enabled": False})
    assert PolicyEngine([off]).evaluate(pod_subject(PRIV)) == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad_Name"},
        {"name": "p", "mode": "deny"},
        {"name": "p", "checks": {"no_such_check": True}},
        {"name": "p", "checks": {"allowed_registries": ["https://x"]}},
        {"name": "p", "checks": {"blocked_host_paths": ["relative/path"]}},
        {"name": "p", "match": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}},
        {"name": "p", "match": {"namespaces": ["Bad NS"]}},
        {"name": "p", "unknown": 1},
    ],
)
def test_invalid_policies(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AdmissionPolicy.model_validate(body)


def test_policy_json_round_trip() -> None:
    policy = AdmissionPolicy.model_validate(
        {
            "name": "p",
            "checks": {
                "privileged": True,
                "disallow_latest": False,
                "blocked_capabilities": ["cap_sys_admin"],
            },
        }
    )
    assert policy.model_dump(mode="json")["checks"] == {
        "privileged": {},
        "blocked_capabilities": {"values": ["SYS_ADMIN"]},
    }
    assert AdmissionPolicy.model_validate(policy.model_dump(mode="json")) == policy


def test_pss_engine_levels_namespaces_and_templates() -> None:
    engine = PssEngine(PssConfig(pss_namespaces={"legacy": {"enforce": "privileged", "warn": "privileged"}}))
    results = engine.evaluate(pod_subject(PRIV))
    assert [(r.check, r.mode) for r in results if r.check == "privileged"] == [("privileged", Mode.ENFORCE)]
    assert {r.mode for r in results} == {Mode.ENFORCE, Mode.WARN}
    assert len({r.check for r in results}) == len(results)  # a check denied is not also warned
    assert engine.evaluate(pod_subject(PRIV, namespace="legacy")) == []
    template = pod_subject(PRIV, kind="Deployment", is_template=True)
    assert denied(engine.evaluate(template))  # Kyverno's behaviour by default
    lenient = PssEngine(PssConfig(deny_templates=False))
    assert not denied(lenient.evaluate(template))
    policy = PolicyEngine([AdmissionPolicy(name="p", checks={"privileged": True})])
    both = CompositeEngine((lenient, policy), deny_templates=False)
    assert not denied(both.evaluate(template))
    assert denied(CompositeEngine((lenient, policy)).evaluate(template))


def test_pss_config_rejects_unknown_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCDR_ADMISSION_PSS_ENFORCE", "strict")
    with pytest.raises(ValidationError):
        PssConfig()
    monkeypatch.setenv("QCDR_ADMISSION_PSS_ENFORCE", "restricted")
    monkeypatch.setenv("QCDR_ADMISSION_PSS_VERSION", "v1.99")
    with pytest.raises(ValidationError):
        PssConfig()

"""From federation objects to what the hub takes: cluster declarations and FederatedPolicySpecs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from qcdr_common.contracts.federation.v1 import PolicyKind, SelectorOperator
from qcdr_federation.hub.controller.convert import (
    ConversionError,
    SecretRef,
    cluster_declaration,
    crd_path,
    policy_spec,
    policy_suspended,
    template_manifest,
)
from qcdr_federation.hub.controller.kinds import CrdKind, crd_kind_of, template_kind


def fc(name: str = "prod-eu", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "federation.qualys.com/v1alpha1",
        "kind": "FederatedCluster",
        "metadata": {"name": name, "generation": 3},
        "spec": spec,
    }


def ftp(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": {
            "metadata": {"name": "deny-shadow", "labels": {"team": "sec"}},
            "spec": {"kprobes": [{"call": "security_file_permission", "syscall": False}]},
        },
        "placement": {"clusterSelector": {"matchLabels": {"env": "prod"}}},
    }
    body.update(spec)
    return {
        "apiVersion": "federation.qualys.com/v1alpha1",
        "kind": "FederatedTracingPolicy",
        "metadata": {"name": "deny-shadow", "generation": 1, "uid": "u-1"},
        "spec": body,
    }


# --------------------------------------------------------------------------- clusters


def test_cluster_labels_include_region_and_provider() -> None:
    decl = cluster_declaration(
        fc(
            labels={"env": "prod", "region": "stale"},
            region="europe-west1",
            provider="gcp",
            bootstrapTokenSecretRef={"name": "prod-eu-bootstrap"},
        )
    )
    assert decl.name == "prod-eu"
    assert decl.labels == {"env": "prod", "region": "europe-west1", "provider": "gcp"}
    assert decl.secret_ref == SecretRef(name="prod-eu-bootstrap", namespace=None, key="token")
    assert decl.paused is False


def test_cluster_without_spec_fields_declares_no_labels() -> None:
    decl = cluster_declaration(fc(paused=True))
    assert (decl.labels, decl.secret_ref, decl.paused) == ({}, None, True)


def test_secret_ref_with_namespace_and_key() -> None:
    decl = cluster_declaration(
        fc(bootstrapTokenSecretRef={"name": "s", "namespace": "ops", "key": "bootstrap.txt"})
    )
    assert decl.secret_ref == SecretRef("s", "ops", "bootstrap.txt")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (fc("Prod_EU"), "metadata.name 'Prod_EU' is not a cluster name"),
        (fc("a" * 64), "is not a cluster name"),
        (fc(provider="openstack"), "spec.provider 'openstack' is not one of"),
        (fc(labels={"bad key!": "x"}), "spec.labels: label key 'bad key!'"),
        (fc(labels={"env": "has space"}), "spec.labels: label 'env'"),
        (fc(labels={"env": 3}), "spec.labels['env'] must be a string"),
        (fc(labels=["env"]), "spec.labels must be an object"),
        (fc(paused="yes"), "spec.paused must be a boolean"),
        (
            fc(bootstrapTokenSecretRef={"name": "Not_A_Name"}),
            "bootstrapTokenSecretRef.name must be a Secret name",
        ),
        (fc(bootstrapTokenSecretRef={"name": "s", "namespace": "a.b"}), "namespace must be a namespace name"),
        (fc(bootstrapTokenSecretRef={"name": "s", "key": "a/b"}), "key must be a Secret key"),
        ({"metadata": {}}, "metadata.name is missing"),
    ],
)
def test_invalid_clusters_say_which_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ConversionError, match=None) as caught:
        cluster_declaration(obj)
    assert message in str(caught.value)


# --------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("kind", "namespace", "api_version", "expected"),
    [
        (CrdKind.TRACING_POLICY, None, "cilium.io/v1alpha1", PolicyKind.TRACING_POLICY),
        (CrdKind.TRACING_POLICY, "payments", "cilium.io/v1alpha1", PolicyKind.TRACING_POLICY_NAMESPACED),
        (CrdKind.NETWORK_POLICY, None, "cilium.io/v2", PolicyKind.CILIUM_CLUSTERWIDE_NETWORK_POLICY),
        (CrdKind.NETWORK_POLICY, "payments", "cilium.io/v2", PolicyKind.CILIUM_NETWORK_POLICY),
    ],
)
def test_template_kind_follows_the_crd_kind_and_the_namespace(
    kind: CrdKind, namespace: str | None, api_version: str, expected: PolicyKind
) -> None:
    metadata: dict[str, Any] = {"name": "p", "uid": "dropped", "resourceVersion": "9"}
    if namespace:
        metadata["namespace"] = namespace
    manifest = template_manifest(kind, {"metadata": metadata, "spec": {"a": 1}})
    assert manifest == {
        "apiVersion": api_version,
        "kind": expected.value,
        "metadata": {"name": "p", **({"namespace": namespace} if namespace else {})},
        "spec": {"a": 1},
    }
    assert template_kind(kind, namespaced=bool(namespace)) == (api_version, expected)
    assert crd_kind_of(expected.value) is kind
    assert crd_kind_of("ConfigMap") is None


def test_policy_spec_converts_camel_case_fields() -> None:
    obj = ftp(
        placement={
            "clusterSelector": {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [{"key": "provider", "operator": "In", "values": ["aws"]}],
            },
            "clusters": ["prod-eu"],
            "excludedClusters": ["staging"],
        },
        overrides=[
            {
                "clusterName": "prod-eu",
                "patches": [{"op": "replace", "path": "/spec/kprobes/0/call", "value": "x"}],
            },
            {"clusterName": "staging", "disabled": True},
        ],
        enforce=True,
        description="why",
    )
    spec = policy_spec(CrdKind.TRACING_POLICY, obj)
    assert spec.template == {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "deny-shadow", "labels": {"team": "sec"}},
        "spec": {"kprobes": [{"call": "security_file_permission", "syscall": False}]},
    }
    assert spec.placement.clusters == ("prod-eu",)
    assert spec.placement.excluded_clusters == ("staging",)
    selector = spec.placement.cluster_selector
    assert selector is not None
    assert selector.match_labels == {"env": "prod"}
    assert selector.match_expressions[0].operator is SelectorOperator.IN
    assert selector.match_expressions[0].values == ("aws",)
    assert [o.cluster_name for o in spec.overrides] == ["prod-eu", "staging"]
    assert spec.overrides[0].patches[0].value == "x"
    assert spec.overrides[1].disabled
    assert spec.enforce
    assert spec.description == "why"


def test_policy_spec_defaults() -> None:
    spec = policy_spec(CrdKind.NETWORK_POLICY, ftp(placement={}))
    assert spec.placement.cluster_selector is None
    assert spec.placement.clusters == ()
    assert spec.overrides == ()
    assert spec.enforce is False
    assert spec.description == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("template"), "spec.template is required"),
        (lambda s: s.pop("placement"), "spec.placement is required"),
        (lambda s: s.update(placement=[]), "spec.placement must be an object"),
        (lambda s: s["template"].pop("spec"), "spec.template.spec must be an object"),
        (lambda s: s["template"].update(metadata="x"), "spec.template.metadata must be an object"),
        (lambda s: s.update(overrides={}), "spec.overrides must be a list"),
        (
            lambda s: s.update(overrides=[{"clusterName": "Bad_Name"}]),
            "spec.overrides[0].clusterName: String should match pattern",
        ),
        (
            lambda s: s.update(overrides=[{"clusterName": "a", "patches": [{"op": "move", "path": "/a"}]}]),
            "spec.overrides[0].patches[0].op",
        ),
        (
            lambda s: s.update(
                placement={"clusterSelector": {"matchExpressions": [{"key": "k", "operator": "Is"}]}}
            ),
            "spec.placement.clusterSelector.matchExpressions[0].operator",
        ),
        (lambda s: s.update(description="x" * 2001), "spec.description"),
        (lambda s: s.update(rollout={"strategy": "canary"}), "spec.rollout.strategy"),
        (lambda s: s.update(rollout={"maxConcurrency": "0%"}), "spec.rollout.maxConcurrency"),
        (lambda s: s.update(rollout={"maxFailures": -1}), "spec.rollout.maxFailures"),
        (lambda s: s.update(suspend="yes"), "spec.suspend must be a boolean"),
    ],
)
def test_invalid_policies_say_which_field(change: Any, message: str) -> None:
    obj = ftp()
    change(obj["spec"])
    with pytest.raises(ConversionError) as caught:
        _convert(obj)
    assert message in str(caught.value)


def _convert(obj: dict[str, Any]) -> tuple[Any, bool]:
    """What the reconciler reads from a policy object."""
    return policy_spec(CrdKind.TRACING_POLICY, obj), policy_suspended(obj)


def test_rollout_and_suspend_in_kubernetes_spelling() -> None:
    obj = ftp(
        suspend=True,
        rollout={
            "strategy": "progressive",
            "maxConcurrency": "25%",
            "minSuccessTimeSeconds": 300,
            "progressDeadlineSeconds": 900,
            "maxFailures": 1,
            "order": ["canary-eu"],
            "onFailure": "rollback",
        },
    )
    rollout = policy_spec(CrdKind.TRACING_POLICY, obj).rollout
    assert rollout is not None
    assert (rollout.strategy, rollout.max_concurrency) == ("progressive", "25%")
    assert rollout.min_success_time_s == 300
    assert (rollout.progress_deadline_s, rollout.max_failures, rollout.order) == (900, 1, ("canary-eu",))
    assert rollout.on_failure == "rollback"
    assert policy_suspended(obj) is True
    assert policy_suspended(ftp()) is False
    assert policy_spec(CrdKind.TRACING_POLICY, ftp()).rollout is None


def test_the_conversion_does_not_change_the_object() -> None:
    obj = ftp(
        overrides=[{"clusterName": "a", "patches": [{"op": "add", "path": "/spec/x", "value": {"y": 1}}]}]
    )
    before = copy.deepcopy(obj)
    policy_spec(CrdKind.TRACING_POLICY, obj)
    assert obj == before


def test_crd_path() -> None:
    assert crd_path("spec", ("overrides", 2, "cluster_name")) == "spec.overrides[2].clusterName"
    assert crd_path("spec", ("placement", "cluster_selector", "match_expressions", 0)) == (
        "spec.placement.clusterSelector.matchExpressions[0]"
    )

"""k8s/samples: every federation object validates against its CRD (strict), the Secrets and RBAC
with kubernetes-validate; broken variants are refused; the samples say what they claim (three
clusters as in the original, a GDPR override to Post) and render to valid Tetragon and Cilium
manifests on every cluster they are placed on."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_federation.hub.controller.convert import cluster_declaration, policy_spec
from qcdr_federation.hub.controller.kinds import CrdKind
from qcdr_federation.hub.controller.reconcile import MIN_TOKEN_LENGTH
from qcdr_federation.hub.policies.placement import placed_clusters
from qcdr_federation.hub.policies.render import check_spec, render_manifest

from tests.federation.crds.manifests import KINDS, errors, kubernetes_versions, samples, samples_of


def _by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in samples_of(kind)}


def test_every_federation_sample_validates_against_its_crd() -> None:
    federation = [d for d in samples() if d["kind"] in KINDS]
    assert {d["kind"] for d in federation} == set(KINDS)
    problems = {f"{d['kind']}/{d['metadata']['name']}": errors(d) for d in federation}
    assert {k: v for k, v in problems.items() if v} == {}


def test_every_other_sample_is_valid_for_kubernetes_1_30_and_later() -> None:
    others = [d for d in samples() if d["kind"] not in KINDS]
    assert {d["kind"] for d in others} == {"Secret", "Role", "RoleBinding"}
    problems = []
    for obj in others:
        for version in kubernetes_versions():
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- broken variants


def _cluster() -> dict[str, Any]:
    return copy.deepcopy(_by_name("FederatedCluster")["prod-eu"])


def _tracing() -> dict[str, Any]:
    return copy.deepcopy(samples_of("FederatedTracingPolicy")[0])


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[int(last) if last.isdigit() else last]

    return change


BROKEN: list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None], str]] = [
    ("provider not in the enum", _cluster, _set("spec.provider", "openstack"), "spec.provider"),
    ("paused as a string", _cluster, _set("spec.paused", "yes"), "spec.paused"),
    ("Secret reference without a name", _cluster, _delete("spec.bootstrapTokenSecretRef.name"), "name"),
    ("label value with a space", _cluster, _set("spec.labels.env", "pro d"), "spec.labels.env"),
    ("an unknown spec field", _cluster, _set("spec.endpoint", "https://x"), "endpoint"),
    ("a cluster name that is no DNS label", _cluster, _set("metadata.name", "Prod_EU"), "metadata.name"),
    ("no template", _tracing, _delete("spec.template"), "template"),
    ("no placement", _tracing, _delete("spec.placement"), "placement"),
    ("template without a name", _tracing, _delete("spec.template.metadata.name"), "name"),
    ("override without clusterName", _tracing, _delete("spec.overrides.0.clusterName"), "clusterName"),
    ("patch op not in the enum", _tracing, _set("spec.overrides.0.patches.0.op", "move"), "op"),
    ("patch path not a pointer", _tracing, _set("spec.overrides.0.patches.0.path", "spec/x"), "path"),
    (
        "selector operator not in the enum",
        _tracing,
        _set("spec.placement.clusterSelector.matchExpressions.0.operator", "Equals"),
        "operator",
    ),
    ("placement names a bad cluster", _tracing, _set("spec.placement.clusters", ["Bad"]), "clusters"),
    ("enforce as a string", _tracing, _set("spec.enforce", "true"), "enforce"),
    (
        "a status state not in the enum",
        _tracing,
        _set("status", {"clusterStatuses": [{"clusterName": "a", "state": "synced"}]}),
        "state",
    ),
]


@pytest.mark.parametrize(("what", "make", "change", "mentions"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_sample_is_refused(
    what: str, make: Callable[[], dict[str, Any]], change: Callable[[dict[str, Any]], None], mentions: str
) -> None:
    obj = make()
    assert errors(obj) == []
    change(obj)
    found = errors(obj)
    assert found, what
    assert any(mentions in e for e in found), found


def test_the_template_spec_and_patch_values_take_anything() -> None:
    obj = _tracing()
    obj["spec"]["template"]["spec"]["anything"] = {"nested": [1, "two", {"three": None}]}
    obj["spec"]["overrides"][0]["patches"].append({"op": "add", "path": "/spec/x", "value": [1, {"y": 2}]})
    obj["spec"]["overrides"][0]["patches"].append({"op": "add", "path": "/spec/z", "value": "text"})
    assert errors(obj) == []


# --------------------------------------------------------------------------- what the samples say


def test_three_clusters_as_in_the_original_sample() -> None:
    clusters = _by_name("FederatedCluster")
    declared = {name: cluster_declaration(obj) for name, obj in clusters.items()}
    assert {(d.labels["provider"], d.labels["region"]) for d in declared.values()} == {
        ("aws", "us-east-1"),
        ("aws", "us-west-2"),
        ("gcp", "europe-west1"),
    }
    gdpr = [name for name, d in declared.items() if d.labels.get("compliance") == "gdpr"]
    assert gdpr == ["prod-eu"]
    assert declared["prod-eu"].labels["provider"] == "gcp"


def test_each_cluster_names_a_sample_secret_the_controller_may_read() -> None:
    secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in samples_of("Secret")}
    (role,) = samples_of("Role")
    (binding,) = samples_of("RoleBinding")
    (rule,) = role["rules"]
    assert rule["verbs"] == ["get"]
    assert rule["resources"] == ["secrets"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "qcdr-federation", "namespace": "qualys-system"}
    ]
    tokens = set()
    for obj in samples_of("FederatedCluster"):
        ref = cluster_declaration(obj).secret_ref
        assert ref is not None
        secret = secrets[(ref.namespace or "qualys-system", ref.name)]
        assert ref.namespace == role["metadata"]["namespace"]
        assert ref.name in rule["resourceNames"]
        token = (
            secret.get("stringData", {}).get(ref.key) or base64.b64decode(secret["data"][ref.key]).decode()
        )
        assert len(token.strip()) >= MIN_TOKEN_LENGTH
        assert token.startswith("CHANGE-ME"), "sample tokens are placeholders"
        tokens.add(token)
    assert len(tokens) == 3, "every cluster has a token of its own"
    assert set(rule["resourceNames"]) == {name for _, name in secrets}


def _cluster_labels() -> dict[str, dict[str, str]]:
    return {name: cluster_declaration(obj).labels for name, obj in _by_name("FederatedCluster").items()}


def test_the_tracing_policy_kills_everywhere_but_only_posts_on_the_gdpr_cluster() -> None:
    (obj,) = samples_of("FederatedTracingPolicy")
    spec = policy_spec(CrdKind.TRACING_POLICY, obj)
    check_spec(spec, _cluster_labels())
    assert spec.template["kind"] == "TracingPolicyNamespaced"
    placed = placed_clusters(spec, _cluster_labels())
    assert sorted(placed) == ["prod-eu", "prod-us-east", "prod-us-west"]
    for cluster in placed:
        manifest = render_manifest("fp-sample", 1, spec, cluster)
        actions = manifest["spec"]["kprobes"][0]["selectors"][0]["matchActions"]
        assert actions == ([{"action": "Post"}] if cluster == "prod-eu" else [{"action": "Sigkill"}])


def test_the_network_policy_goes_to_the_aws_clusters_and_prod_eu() -> None:
    (obj,) = samples_of("FederatedNetworkPolicy")
    spec = policy_spec(CrdKind.NETWORK_POLICY, obj)
    check_spec(spec, _cluster_labels())
    assert spec.template["kind"] == "CiliumClusterwideNetworkPolicy"
    assert sorted(placed_clusters(spec, _cluster_labels())) == ["prod-eu", "prod-us-east", "prod-us-west"]
    assert not spec.enforce


@pytest.mark.shared
def test_every_rendered_sample_policy_is_valid_upstream(shared_path: Path) -> None:
    """What each cluster gets validates against Tetragon's and Cilium's own schemas."""
    validator = ManifestValidator(shared_path)
    labels = _cluster_labels()
    for crd_kind, kind in (
        (CrdKind.TRACING_POLICY, "FederatedTracingPolicy"),
        (CrdKind.NETWORK_POLICY, "FederatedNetworkPolicy"),
    ):
        for obj in samples_of(kind):
            spec = policy_spec(crd_kind, obj)
            for cluster in placed_clusters(spec, labels):
                manifest = render_manifest("fp-sample", 1, spec, cluster)
                assert validator.errors(manifest) == [], (kind, cluster)

"""Rendering: overrides (RFC 6902 patches, disabled), the federation labels and annotation, the
content hash, the structural checks; and rendered manifests of every kind validated against the
upstream schemas in ../shared (Tetragon policies taken from the Tetragon corpus there)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from qcdr_common.contracts.federation.v1 import (
    ANNOTATION_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_POLICY_ID,
    FederatedPolicySpec,
)
from qcdr_common.contracts.policies.v1 import PolicyDocument
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_federation.hub.policies.issues import PolicySpecError
from qcdr_federation.hub.policies.render import (
    check_spec,
    manifest_issues,
    render,
    set_etag,
    spec_hash,
    spec_issues,
)
from qcdr_federation.hub.policies.sets import LivePolicy, RenderCache, build_set

from tests.federation.policies.conftest import tracing_policy

# Tetragon corpus files (../shared/corpora/tetragon, see its SOURCES.md), read in place
KILL_USERNS = "examples/tracingpolicy/sandbox/linux-namespaces/kill_unprivileged_user_namespace.yaml"
FILE_MONITORING = "examples/quickstart/file_monitoring_enforce.yaml"
ACTION_PATH = "/spec/kprobes/0/selectors/0/matchActions/0/action"


def corpus(shared_path: Path, relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((shared_path / "corpora" / "tetragon" / relative).read_text())
    return loaded


def spec_of(template: dict[str, Any], **extra: Any) -> FederatedPolicySpec:
    raw: dict[str, Any] = {"template": template, "placement": {"cluster_selector": {}}}
    raw.update(extra)
    return FederatedPolicySpec.model_validate(raw)


def canonical_sha256(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


CNP: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "payments-egress", "namespace": "payments"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "payments"}},
        "egress": [
            {
                "toEndpoints": [
                    {"matchLabels": {"io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}
                ],
                "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}],
            },
            {
                "toFQDNs": [{"matchName": "api.payments.example.com"}],
                "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
            },
        ],
    },
}
CCNP: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumClusterwideNetworkPolicy",
    "metadata": {"name": "deny-known-c2"},
    "spec": {
        "endpointSelector": {},
        "egressDeny": [{"toCIDRSet": [{"cidr": "203.0.113.0/24"}, {"cidr": "198.51.100.7/32"}]}],
    },
}


# --------------------------------------------------------------------------- rendering


def test_render_adds_federation_labels_and_keeps_the_template() -> None:
    template = tracing_policy()
    template["metadata"]["labels"] = {"team": "sec"}
    spec = spec_of(template)
    before = copy.deepcopy(spec.template)
    placed = render("fp-1", "no-ptrace", 3, spec, "eu-1")
    meta = placed.manifest["metadata"]
    assert meta["labels"] == {"team": "sec", LABEL_POLICY_ID: "fp-1", LABEL_MANAGED_BY: "qcdr-federation"}
    assert meta["annotations"] == {ANNOTATION_GENERATION: "3"}
    assert spec.template == before  # rendering never touches the template
    assert (placed.policy_id, placed.name, placed.generation, placed.enforce) == (
        "fp-1",
        "no-ptrace",
        3,
        False,
    )
    # sha256 of canonical JSON; the same bytes PolicyDocument hashes, so the spoke's response
    # service computes the hash the hub rendered
    assert placed.content_hash == canonical_sha256(placed.manifest)
    document = PolicyDocument(family="federated", filename="x.yaml", body=placed.manifest)
    assert document.content_hash == placed.content_hash
    # a new generation is a new hash (the annotation), a new cluster without overrides is not
    assert render("fp-1", "no-ptrace", 4, spec, "eu-1").content_hash != placed.content_hash
    assert render("fp-1", "no-ptrace", 3, spec, "us-1").content_hash == placed.content_hash


def test_patches_cannot_remove_the_federation_labels() -> None:
    template = tracing_policy()
    template["metadata"]["labels"] = {LABEL_MANAGED_BY: "someone-else"}
    spec = spec_of(
        template,
        overrides=[{"cluster_name": "eu-1", "patches": [{"op": "remove", "path": "/metadata/labels"}]}],
    )
    labels = render("fp-1", "p", 1, spec, "eu-1").manifest["metadata"]["labels"]
    assert labels == {LABEL_POLICY_ID: "fp-1", LABEL_MANAGED_BY: "qcdr-federation"}


@pytest.mark.shared
def test_override_turns_sigkill_into_post_for_one_cluster(shared_path: Path) -> None:
    template = corpus(shared_path, KILL_USERNS)
    assert template["spec"]["kprobes"][0]["selectors"][0]["matchActions"][0]["action"] == "Sigkill"
    spec = spec_of(
        template,
        overrides=[
            {"cluster_name": "canary", "patches": [{"op": "replace", "path": ACTION_PATH, "value": "Post"}]}
        ],
    )
    check_spec(spec, {"canary", "prod-1"})
    canary = render("fp-1", "userns", 1, spec, "canary").manifest
    prod = render("fp-1", "userns", 1, spec, "prod-1").manifest
    assert canary["spec"]["kprobes"][0]["selectors"][0]["matchActions"][0] == {
        "action": "Post",
        "argError": -1,
    }
    assert prod["spec"]["kprobes"][0]["selectors"][0]["matchActions"][0]["action"] == "Sigkill"
    validator = ManifestValidator(shared_path)
    assert validator.errors(canary) == []
    assert validator.errors(prod) == []


def test_disabled_override_takes_the_cluster_out() -> None:
    spec = spec_of(tracing_policy(), overrides=[{"cluster_name": "canary", "disabled": True}])
    policy = LivePolicy("fp-1", "p", 1, spec)
    cache = RenderCache()
    assert build_set("canary", {}, [policy], cache).placed.policies == ()
    assert [p.policy_id for p in build_set("prod-1", {}, [policy], cache).placed.policies] == ["fp-1"]


def test_set_etag_depends_on_the_pairs_only() -> None:
    assert set_etag([("a", "1"), ("b", "2")]) == set_etag([("b", "2"), ("a", "1")])
    assert set_etag([("a", "1")]) != set_etag([("a", "2")])
    assert set_etag([]) != set_etag([("a", "1")])


def test_render_cache_renders_once_per_generation_and_cluster() -> None:
    cache = RenderCache(max_entries=2)
    policy = LivePolicy("fp-1", "p", 1, spec_of(tracing_policy()))
    first = cache.render(policy, "eu-1")
    assert cache.render(policy, "eu-1") is first
    assert (cache.hits, cache.misses) == (1, 1)
    cache.render(policy, "us-1")
    cache.render(policy, "ap-1")  # evicts eu-1
    assert len(cache) == 2
    assert cache.render(policy, "eu-1") is not first


# --------------------------------------------------------------------------- schemas of every kind


@pytest.mark.shared
def test_rendered_manifests_of_every_kind_validate_upstream(shared_path: Path) -> None:
    validator = ManifestValidator(shared_path)
    namespaced = corpus(shared_path, FILE_MONITORING)
    assert namespaced["kind"] == "TracingPolicyNamespaced"
    namespaced["metadata"]["namespace"] = "payments"
    templates = [corpus(shared_path, KILL_USERNS), namespaced, CNP, CCNP]
    assert {t["kind"] for t in templates} == {
        "TracingPolicy",
        "TracingPolicyNamespaced",
        "CiliumNetworkPolicy",
        "CiliumClusterwideNetworkPolicy",
    }
    for template in templates:
        spec = spec_of(template)
        check_spec(spec, {"eu-1"})
        manifest = render("fp-0190e3a4-0000-7000-8000-000000000001", "p", 12, spec, "eu-1").manifest
        assert validator.errors(manifest) == [], template["kind"]


@pytest.mark.shared
def test_the_schema_check_would_catch_a_bad_override(shared_path: Path) -> None:
    """The validation above can fail: an override writing an action Tetragon does not have."""
    spec = spec_of(
        corpus(shared_path, KILL_USERNS),
        overrides=[
            {"cluster_name": "eu-1", "patches": [{"op": "replace", "path": ACTION_PATH, "value": "Explode"}]}
        ],
    )
    errors = ManifestValidator(shared_path).errors(render("fp-1", "p", 1, spec, "eu-1").manifest)
    assert any("matchActions[0].action" in e for e in errors), errors


# --------------------------------------------------------------------------- structural checks


def _where(issues: list[Any]) -> dict[str, str]:
    """loc -> the messages there, joined."""
    found: dict[str, str] = {}
    for issue in issues:
        where = ".".join(str(p) for p in issue.loc)
        found[where] = f"{found[where]} | {issue.msg}" if where in found else issue.msg
    return found


@pytest.mark.parametrize(
    ("change", "where", "fragment"),
    [
        (lambda t: t.update(kind="NetworkPolicy"), "template.kind", "unknown kind 'NetworkPolicy'"),
        (
            lambda t: t.update(apiVersion="cilium.io/v2"),
            "template.apiVersion",
            "TracingPolicy is cilium.io/v1alpha1",
        ),
        (lambda t: t["metadata"].update(name="Bad_Name"), "template.metadata.name", "DNS-1123 subdomain"),
        (lambda t: t["metadata"].pop("name"), "template.metadata.name", "DNS-1123 subdomain"),
        # "$" in a re.match pattern also matches before a final newline: the name must match whole
        (lambda t: t["metadata"].update(name="block\n"), "template.metadata.name", "DNS-1123 subdomain"),
        (
            lambda t: t["metadata"].update(namespace="default"),
            "template.metadata.namespace",
            "cluster-scoped",
        ),
        (lambda t: t["metadata"].update(uid="1234"), "template.metadata.uid", "server-set"),
        (lambda t: t["metadata"].update(labels={"a": 1}), "template.metadata.labels", "map of strings"),
        (lambda t: t.update(spec=[1]), "template.spec", "must be an object"),
        (lambda t: t.pop("spec"), "template.spec", "must be an object"),
        (lambda t: t.update(status={}), "template.status", "unknown field"),
        (lambda t: t.pop("metadata"), "template.metadata", "required"),
    ],
)
def test_structural_issues(change: Any, where: str, fragment: str) -> None:
    template = tracing_policy()
    change(template)
    issues = _where(manifest_issues(template))
    assert where in issues, issues
    assert fragment in issues[where]


def test_namespaced_kinds_need_a_namespace() -> None:
    template = copy.deepcopy(CNP)
    del template["metadata"]["namespace"]
    assert "namespaced" in _where(manifest_issues(template))["template.metadata.namespace"]
    assert manifest_issues(CNP) == []
    for namespace in ("Not-A-Label", "shop\n"):  # a final newline once passed: the check must match whole
        template["metadata"]["namespace"] = namespace
        assert "DNS-1123 label" in _where(manifest_issues(template))["template.metadata.namespace"]


def test_patch_failures_name_the_cluster_when_it_exists() -> None:
    spec = spec_of(
        tracing_policy(),
        overrides=[
            {
                "cluster_name": "eu-1",
                "patches": [{"op": "replace", "path": "/spec/nothing/here", "value": 1}],
            },
            {
                "cluster_name": "us-1",
                "patches": [{"op": "replace", "path": "/kind", "value": "TracingPolicyNamespaced"}],
            },
            {"cluster_name": "ap-1", "patches": [{"op": "remove", "path": "/metadata/name"}]},
        ],
    )
    issues = _where(spec_issues(spec, {"eu-1", "us-1", "ap-1"}))
    assert "cluster 'eu-1'" in issues["overrides.0.patches"]
    assert "do not apply" in issues["overrides.0.patches"]
    assert "cluster 'us-1'" in issues["overrides.1.patches"]
    assert "cannot change it" in issues["overrides.1.patches"]
    assert "cluster 'ap-1'" in issues["overrides.2.patches"]
    assert "metadata.name" in issues["overrides.2.patches"]
    # a cluster not declared yet: no error now; when it appears, the policy stays off it, with why
    assert "overrides.0.patches" not in _where(spec_issues(spec, {"us-1", "ap-1"}))
    result = build_set("eu-1", {}, [LivePolicy("fp-1", "p", 2, spec)], RenderCache())
    assert result.placed.policies == ()
    assert "cluster 'eu-1'" in result.errors["fp-1"]
    with pytest.raises(PolicySpecError, match="eu-1"):
        check_spec(spec, {"eu-1"})


def test_a_nul_anywhere_in_the_spec_is_an_issue_at_its_field() -> None:
    """JSON and the contract allow U+0000 in any string, PostgreSQL's jsonb does not: the check
    names each field (a key with a NUL at the map holding it) before the hub tries to store it."""
    template = tracing_policy()
    template["spec"]["note"] = "a\x00b"
    template["spec"]["k\x00ey"] = {"deep": ["ok", "x\x00"]}
    spec = spec_of(template, description="\x00")
    issues = _where(spec_issues(spec, set()))
    assert set(issues) == {
        "description",
        "template.spec",
        "template.spec.note",
        "template.spec.k\\u0000ey.deep.1",
    }
    assert all("NUL" in msg for msg in issues.values()), issues
    assert "'k\\x00ey'" in issues["template.spec"]
    with pytest.raises(PolicySpecError, match="NUL"):
        check_spec(spec_of(tracing_policy(), description="\x00"), set())


def test_spec_hash_changes_exactly_with_the_spec() -> None:
    one = spec_of(tracing_policy())
    assert spec_hash(one) == spec_hash(spec_of(tracing_policy()))
    assert spec_hash(one) != spec_hash(spec_of(tracing_policy(action="Post")))
    assert spec_hash(one) != spec_hash(spec_of(tracing_policy(), enforce=True))
    assert spec_hash(one) != spec_hash(spec_of(tracing_policy(), placement={"clusters": ["eu-1"]}))
    # key order in the request does not matter
    reordered = dict(reversed(list(tracing_policy().items())))
    assert spec_hash(one) == spec_hash(spec_of(reordered))

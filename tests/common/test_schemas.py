"""ManifestValidator: strict validation against the upstream Tetragon, Cilium and Kubernetes schemas."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from qcdr_common.testing.schemas import ManifestValidator, SchemaKind

pytestmark = pytest.mark.shared

MANAGED = {"app.kubernetes.io/managed-by": "qcdr"}


@pytest.fixture(scope="module")
def validator(shared_path: Path) -> ManifestValidator:
    return ManifestValidator(shared_path)


def tracing_policy(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kprobes": [
            {
                "call": "sys_write",
                "syscall": True,
                "args": [{"index": 0, "type": "int"}],
                "selectors": [{"matchArgs": [{"index": 0, "operator": "Equal", "values": ["1"]}]}],
            }
        ]
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "qcdr-write-stdout", "labels": dict(MANAGED)},
        "spec": spec,
    }


def ccnp(cidr: str = "10.0.0.0/8") -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "qcdr-deny-c2", "labels": dict(MANAGED)},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "egressDeny": [{"toCIDRSet": [{"cidr": cidr}]}],
        },
    }


def test_valid_tracing_policy_and_ccnp(validator: ManifestValidator) -> None:
    assert validator.errors(tracing_policy()) == []
    assert validator.errors(ccnp()) == []
    assert validator.errors(ccnp("2001:db8::/32")) == []


def test_unknown_field_is_an_error_with_its_path(validator: ManifestValidator) -> None:
    body = tracing_policy()
    body["spec"]["kprobes"][0]["sycall"] = True
    body["spec"]["bogus"] = 1
    assert validator.errors(body) == [
        'spec.bogus: unknown field "bogus"',
        'spec.kprobes[0].sycall: unknown field "sycall"',
    ]


def test_unknown_top_level_and_metadata_fields(validator: ManifestValidator) -> None:
    body = ccnp()
    body["specc"] = {}
    body["metadata"]["lables"] = {}
    errors = validator.errors(body)
    assert 'specc: unknown field "specc"' in errors
    assert 'metadata.lables: unknown field "lables"' in errors


def test_bad_label_value_and_key(validator: ManifestValidator) -> None:
    body = tracing_policy()
    body["metadata"]["labels"] = {"team": "red team", "example.com/ok": "yes", "-bad": "x"}
    errors = validator.errors(body)
    assert len(errors) == 2
    assert any(e.startswith("metadata.labels.team: invalid label value 'red team'") for e in errors)
    assert any("invalid label key '-bad'" in e for e in errors)
    body["metadata"]["labels"] = {"a": "x" * 64}
    assert validator.errors(body)[0].startswith("metadata.labels.a: invalid label value")


def test_names_namespaces_and_annotations(validator: ManifestValidator) -> None:
    body = tracing_policy()
    body["metadata"]["name"] = "Not_A_Name"
    assert validator.errors(body) == [
        "metadata.name: 'Not_A_Name' must be a DNS-1123 subdomain "
        "(lowercase alphanumerics, '-' and '.', ≤ 253)"
    ]
    body["metadata"] = {"name": "a" * 254}
    assert validator.errors(body)[0].startswith("metadata.name:")
    body["metadata"] = {"name": "ok", "namespace": "Bad.NS", "annotations": {"note": 5}}
    errors = validator.errors(body)
    assert any(e.startswith("metadata.namespace:") for e in errors)
    assert any(e.startswith("metadata.annotations.note: annotation value must be a string") for e in errors)
    body["metadata"] = {"name": "ok", "annotations": {"big": "x" * (256 * 1024)}}
    assert any("256 KiB" in e for e in validator.errors(body))
    body["metadata"] = {"labels": {}}
    assert validator.errors(body) == ["metadata.name: name or generateName is required"]


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "10.0.0.0", "10.0.0.0/255.0.0.0", "2001:db8::1/32", "nope"])
def test_cidr_format_rejects_host_bits_and_non_cidrs(validator: ManifestValidator, cidr: str) -> None:
    errors = validator.errors(ccnp(cidr))
    assert errors == [f"spec.egressDeny[0].toCIDRSet[0].cidr: {cidr!r} is not a 'cidr'"]


def test_cidr_group(validator: ManifestValidator) -> None:
    group = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumCIDRGroup",
        "metadata": {"name": "qcdr-bad-ips"},
        "spec": {"externalCIDRs": ["192.0.2.0/24", "198.51.100.7/32"]},
    }
    assert validator.errors(group) == []
    group["spec"]["externalCIDRs"].append("192.0.2.1/24")
    assert validator.errors(group) == ["spec.externalCIDRs[2]: '192.0.2.1/24' is not a 'cidr'"]


def test_to_fqdns_is_not_allowed_in_egress_deny(validator: ManifestValidator) -> None:
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "deny-dns", "namespace": "shop"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "egress": [{"toFQDNs": [{"matchName": "example.com"}]}],
        },
    }
    assert validator.errors(cnp) == []
    cnp["spec"]["egressDeny"] = cnp["spec"].pop("egress")
    assert validator.errors(cnp) == ['spec.egressDeny[0].toFQDNs: unknown field "toFQDNs"']


def test_cilium_regex_python_cannot_compile_is_replaced(validator: ManifestValidator) -> None:
    notes = validator.notes("cilium.io/v2", "CiliumNetworkPolicy")
    assert len(notes) == 2  # spec.log.value and specs[].log.value
    assert all("\\\\PC" in n for n in notes)
    assert all(n.endswith("-> '^.*$'") for n in notes)
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "logged", "namespace": "shop"},
        "spec": {"endpointSelector": {}, "ingress": [{}], "log": {"value": "qcdr"}},
    }
    assert validator.errors(cnp) == []


def test_type_and_enum_errors(validator: ManifestValidator) -> None:
    body = tracing_policy()
    body["spec"]["kprobes"][0]["args"][0]["index"] = "zero"
    body["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["operator"] = "Equals"
    errors = validator.errors(body)
    assert "spec.kprobes[0].args[0].index: 'zero' is not of type 'integer'" in errors
    assert any(
        e.startswith("spec.kprobes[0].selectors[0].matchArgs[0].operator: 'Equals' is not one of")
        for e in errors
    )


def test_builtin_kinds_through_kubernetes_validate_schemas(validator: ManifestValidator) -> None:
    netpol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "shop", "labels": dict(MANAGED)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}],
        },
    }
    assert validator.errors(netpol) == []
    bad = copy.deepcopy(netpol)
    bad["spec"]["policyTypes"] = "Ingress"
    bad["spec"]["egress"][0]["ports"] = [{"prot": "TCP"}]
    bad["metadata"]["labels"] = {"x": "not ok"}
    errors = validator.errors(bad)
    assert 'spec.egress[0].ports[0].prot: unknown field "prot"' in errors
    assert any(e.startswith("spec.policyTypes: 'Ingress' is not of type") for e in errors)
    assert any(e.startswith("metadata.labels.x: invalid label value") for e in errors)
    assert validator.errors({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}) == []
    assert validator.errors({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}) != []
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "shop"},
        "data": {"k": 1},
    }
    assert validator.errors(cm) == ["data.k: 1 is not of type 'string', 'null'"]


def test_unknown_kind_and_missing_type_fields(validator: ManifestValidator) -> None:
    assert validator.errors(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    ) == ["kind: no schema for kind Widget (apiVersion example.com/v1)"]
    assert validator.errors({"apiVersion": "cilium.io/v9", "kind": "TracingPolicy"}) == [
        "kind: no schema for kind TracingPolicy (apiVersion cilium.io/v9)"
    ]
    assert validator.errors({"kind": "ConfigMap"}) == ["apiVersion: apiVersion is required"]


def test_schema_kinds(validator: ManifestValidator) -> None:
    crds = list(validator.iter_schema_kinds(include_builtin=False))
    assert [(k.api_version, k.kind) for k in crds] == [
        ("cilium.io/v1alpha1", "TracingPolicy"),
        ("cilium.io/v1alpha1", "TracingPolicyNamespaced"),
        ("cilium.io/v2", "CiliumNetworkPolicy"),
        ("cilium.io/v2", "CiliumClusterwideNetworkPolicy"),
        ("cilium.io/v2", "CiliumCIDRGroup"),
        ("cilium.io/v2alpha1", "CiliumCIDRGroup"),
    ]
    everything = set(validator.iter_schema_kinds())
    assert SchemaKind("networking.k8s.io/v1", "NetworkPolicy") in everything
    assert SchemaKind("v1", "ConfigMap") in everything
    assert validator.supports("v1", "Namespace")
    assert not validator.supports("v1", "ConfigMapList")


def _tetragon_examples(shared: Path) -> tuple[list[Path], list[tuple[Path, dict[str, Any]]]]:
    files = sorted((shared / "corpora" / "tetragon" / "examples").rglob("*.yaml"))
    docs = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("TracingPolicy", "TracingPolicyNamespaced"):
                docs.append((path, doc))
    return files, docs


def test_every_upstream_tetragon_example_validates_strictly(
    validator: ManifestValidator, shared_path: Path
) -> None:
    files, docs = _tetragon_examples(shared_path)
    # 83 example files; one holds only an EventChecker, one a Pod and a TracingPolicy: 82 policies.
    assert len(files) == 83
    assert len(docs) == 82
    failures = {str(path): validator.errors(doc) for path, doc in docs if validator.errors(doc)}
    assert failures == {}


def test_upstream_cilium_examples(validator: ManifestValidator, shared_path: Path) -> None:
    results = {}
    for path in sorted((shared_path / "corpora" / "cilium" / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                results[path.name] = validator.errors(doc)
    # the one known-bad upstream example: a null `egress:` (meant as "deny all egress")
    assert results.pop("egress-default-deny.yaml") == ["spec.egress: None is not of type 'array'"]
    assert len(results) == 5
    assert all(errors == [] for errors in results.values()), results


def test_validators_are_cached_so_bulk_validation_is_fast(shared_path: Path) -> None:
    ManifestValidator(shared_path).errors(tracing_policy())  # warm the module-level cache
    fresh = ManifestValidator(shared_path)  # a new instance reuses the compiled schemas
    bodies = [tracing_policy() for _ in range(1000)] + [ccnp() for _ in range(500)]
    started = time.perf_counter()
    assert all(not fresh.errors(b) for b in bodies)
    assert time.perf_counter() - started < 10  # ≈0.3 ms each on a laptop; generous for CI

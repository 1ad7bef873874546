"""The federation CRDs: valid CustomResourceDefinitions (kubernetes-validate, strict, Kubernetes
1.30 and later), structural schemas, the names, scope and columns the original defined, enums that
match the wire contract, and a status the controller builds that fits the schema."""

from __future__ import annotations

import copy
import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import jsonschema
import kubernetes_validate
import pytest
import yaml
from qcdr_common.contracts.federation.v1 import (
    ClusterHealth,
    PatchOp,
    PolicyApplyState,
    SelectorOperator,
)
from qcdr_common.testing.schemas import FORMAT_CHECKER
from qcdr_federation.hub.clusters.schemas import ClusterRead
from qcdr_federation.hub.controller import status as st
from qcdr_federation.hub.controller.convert import PROVIDERS
from qcdr_federation.hub.policies.schemas import ClusterPolicyStatus, FederatedPolicyStatus, PolicyCell

from tests.federation.crds.manifests import (
    CRDS,
    KINDS,
    KUBECTL,
    SAMPLES,
    crd,
    kubernetes_versions,
    schema,
    version,
    walk,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- CRD validity


@pytest.mark.parametrize("kind", KINDS)
def test_every_crd_is_a_valid_customresourcedefinition(kind: str) -> None:
    versions = kubernetes_versions()
    assert versions[0].startswith("1.30.")
    problems = []
    for k8s_version in versions:
        try:
            kubernetes_validate.validate(crd(kind), k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{k8s_version}: {exc.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("a misspelt schema keyword", lambda s: s["properties"]["spec"].update(propertys={})),
        ("a version without a name", None),
        ("printer column without jsonPath", None),
    ],
)
def test_kubernetes_validate_rejects_broken_crds(where: str, change: Any) -> None:
    broken = copy.deepcopy(crd("FederatedCluster"))
    ver = broken["spec"]["versions"][0]
    if where == "a version without a name":
        del ver["name"]
    elif where == "printer column without jsonPath":
        del ver["additionalPrinterColumns"][0]["jsonPath"]
    else:
        change(ver["schema"]["openAPIV3Schema"])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.31", strict=True)


EXPECTED_NAMES = {
    "FederatedCluster": ("federatedclusters", "federatedcluster", ["fc", "fcl"]),
    "FederatedTracingPolicy": ("federatedtracingpolicies", "federatedtracingpolicy", ["ftp", "ftpol"]),
    "FederatedNetworkPolicy": ("federatednetworkpolicies", "federatednetworkpolicy", ["fnp", "fnpol"]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_names_scope_version_and_status_subresource(kind: str) -> None:
    plural, singular, short = EXPECTED_NAMES[kind]
    doc = crd(kind)
    assert doc["metadata"]["name"] == f"{plural}.federation.qualys.com"
    spec = doc["spec"]
    assert spec["group"] == "federation.qualys.com"
    assert spec["scope"] == "Cluster"
    names = spec["names"]
    assert (names["kind"], names["listKind"], names["plural"], names["singular"]) == (
        kind,
        f"{kind}List",
        plural,
        singular,
    )
    assert names["shortNames"] == short
    ver = version(kind)
    assert (ver["name"], ver["served"], ver["storage"]) == ("v1alpha1", True, True)
    assert ver["subresources"] == {"status": {}}


PRINTER_COLUMNS = {
    "FederatedCluster": [
        ("State", ".status.state"),
        ("Region", ".spec.region"),
        ("Provider", ".spec.provider"),
        ("Nodes", ".status.nodeCount"),
        ("Policies", ".status.syncedPolicies"),
        ("Last Heartbeat", ".status.lastHeartbeat"),
        ("Age", ".metadata.creationTimestamp"),
    ],
    "FederatedTracingPolicy": [
        ("Synced", '.status.conditions[?(@.type=="Synced")].status'),
        ("Clusters", ".status.placedClusters"),
        ("Rollout", ".status.rollout.phase"),
        ("Age", ".metadata.creationTimestamp"),
    ],
}
PRINTER_COLUMNS["FederatedNetworkPolicy"] = PRINTER_COLUMNS["FederatedTracingPolicy"]


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields_of_the_schema(kind: str) -> None:
    columns = version(kind)["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"]) for c in columns] == PRINTER_COLUMNS[kind]
    paths = {path for path, _ in walk(schema(kind))}
    for column in columns:
        field = re.sub(r"\[\?\(.*\)\]", "[]", column["jsonPath"]).lstrip(".")
        if field.startswith("metadata."):
            continue
        assert field in paths, column
        node = dict(walk(schema(kind)))[field]
        expected = {"integer": "integer", "date": "string", "string": "string"}[column["type"]]
        assert node["type"] == expected, column


# --------------------------------------------------------------------------- structural schemas


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_structural(kind: str) -> None:
    """Every node has a type (except a preserve-unknown one), no node lists properties and
    additionalProperties together, metadata only says it is an object, list-map keys are required."""
    problems = []
    for path, node in walk(schema(kind)):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            if "type" not in node and (node.get("properties") or node.get("items")):
                problems.append(f"{path}: untyped node with children")
            continue
        if node.get("x-kubernetes-int-or-string"):
            # Kubernetes requires such a node to have no type of its own
            if "type" in node:
                problems.append(f"{path}: int-or-string with a type")
            continue
        if "type" not in node:
            problems.append(f"{path}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if node.get("x-kubernetes-list-type") == "map":
            required = set(node["items"].get("required", []))
            missing = set(node["x-kubernetes-list-map-keys"]) - required
            if missing:
                problems.append(f"{path}: list-map keys {missing} are not required")
        if node.get("x-kubernetes-list-type") == "set" and node["items"].get("type") == "object":
            problems.append(f"{path}: a set of objects")
    assert schema(kind)["properties"]["metadata"] == {"type": "object"}
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_fields_are_preserved_only_in_the_template_spec_and_patch_values(kind: str) -> None:
    preserved = {p for p, n in walk(schema(kind)) if n.get("x-kubernetes-preserve-unknown-fields")}
    expected = (
        set() if kind == "FederatedCluster" else {"spec.template.spec", "spec.overrides[].patches[].value"}
    )
    assert preserved == expected


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_fit_their_schema(kind: str) -> None:
    defaults = {path: node for path, node in walk(schema(kind)) if "default" in node}
    assert defaults, "every kind has a default (paused, key, disabled, enforce)"
    for path, node in defaults.items():
        problems = list(
            jsonschema.Draft7Validator(node, format_checker=FORMAT_CHECKER).iter_errors(node["default"])
        )
        assert not problems, path


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def test_the_two_policy_crds_share_one_schema() -> None:
    tracing, network = (version(k) for k in ("FederatedTracingPolicy", "FederatedNetworkPolicy"))
    assert _without_descriptions(tracing) == _without_descriptions(network)


# --------------------------------------------------------------------------- agreement with the contract


def _enum(kind: str, path: str) -> set[str]:
    return set(dict(walk(schema(kind)))[path]["enum"])


def test_enums_match_the_contract_and_the_controller() -> None:
    assert _enum("FederatedCluster", "spec.provider") == set(PROVIDERS)
    assert _enum("FederatedCluster", "status.state") == {h.value for h in ClusterHealth}
    assert _enum("FederatedCluster", "status.policies[].state") == {s.value for s in PolicyApplyState}
    for kind in ("FederatedTracingPolicy", "FederatedNetworkPolicy"):
        assert _enum(kind, "status.clusterStatuses[].state") == {s.value for s in PolicyApplyState}
        assert _enum(kind, "spec.placement.clusterSelector.matchExpressions[].operator") == {
            o.value for o in SelectorOperator
        }
        assert _enum(kind, "spec.overrides[].patches[].op") == set(
            get_args(PatchOp.model_fields["op"].annotation)
        )


def _status_validator(kind: str) -> jsonschema.Draft7Validator:
    status_schema = copy.deepcopy(schema(kind)["properties"]["status"])
    for _, node in walk(status_schema):
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
    return jsonschema.Draft7Validator(status_schema, format_checker=FORMAT_CHECKER)


def _errors(kind: str, status: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _status_validator(kind).iter_errors(status)]


def _cell(name: str, state: str, in_sync: bool) -> PolicyCell:
    return PolicyCell(
        policy_id=f"fp-{name}",
        name=name,
        desired_generation=2,
        generation=2 if in_sync else 1,
        state=state,
        in_sync=in_sync,
        observed_at=NOW,
    )


def test_the_cluster_status_the_controller_writes_fits_the_schema() -> None:
    view = ClusterRead(
        name="prod-eu",
        id="cl-1",
        labels={"env": "prod"},
        source="crd",
        health=ClusterHealth.DEGRADED,
        health_changed_at=NOW,
        registered_at=NOW - timedelta(hours=1),
        last_heartbeat_at=NOW - timedelta(seconds=3),
        version="0.1.0",
        kubernetes_version="v1.31.2",
        node_count=3,
        pod_count=42,
        counts={"events_forwarded": 10},
        problems=["response API 503"],
        policies={
            "fp-a": _cell("a", "applied", True),
            "fp-b": _cell("b", "failed", False),
            "fp-c": _cell("c", "pending", False),
        },
    )
    outcome = st.Outcome(4, ok=True)
    for body in (
        st.cluster_status(outcome, view, generation=4, previous=None, now=NOW),
        st.cluster_status(None, None, generation=1, previous=None, now=NOW),
        st.cluster_status(
            st.Outcome(1, ok=False, reason=st.REASON_VALIDATION_FAILED, message="bad"),
            None,
            generation=1,
            previous=None,
            now=NOW,
        ),
    ):
        assert _errors("FederatedCluster", body) == []
    body = st.cluster_status(outcome, view, generation=4, previous=None, now=NOW)
    assert body["state"] == "degraded"
    assert body["syncedPolicies"] == 1


def test_the_policy_status_the_controller_writes_fits_the_schema() -> None:
    status = FederatedPolicyStatus(
        id="fp-1",
        name="deny",
        generation=2,
        clusters=[
            ClusterPolicyStatus(
                cluster="prod-eu",
                placed=True,
                desired_hash="h",
                generation=2,
                content_hash="h",
                state=PolicyApplyState.APPLIED,
                in_sync=True,
                observed_at=NOW,
            ),
            ClusterPolicyStatus(
                cluster="prod-us-east", placed=True, desired_hash="h2", state="pending", in_sync=False
            ),
        ],
    )
    for kind in ("FederatedTracingPolicy", "FederatedNetworkPolicy"):
        body = st.policy_status_body(
            st.Outcome(3, ok=True, policy_id="fp-1"), status, generation=3, previous=None, now=NOW
        )
        assert _errors(kind, body) == []
        assert body["placedClusters"] == 2
        failed = st.policy_status_body(
            st.Outcome(3, ok=False, reason=st.REASON_POLICY_CONFLICT, message="taken"),
            None,
            generation=3,
            previous=None,
            now=NOW,
        )
        assert _errors(kind, failed) == []


def test_a_wrong_status_is_caught_by_the_schema() -> None:
    body = st.cluster_status(None, None, generation=1, previous=None, now=NOW)
    body["state"] = "unreachable"  # the original's state; this CRD says offline
    body["conditions"][0]["status"] = "Maybe"
    assert len(_errors("FederatedCluster", body)) == 2


# --------------------------------------------------------------------------- kustomize


@pytest.mark.parametrize("directory", [CRDS, SAMPLES])
def test_kustomize_builds_every_file_of_the_directory(directory: Any) -> None:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    files = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    expected = sum(len([d for d in yaml.safe_load_all((directory / f).read_text()) if d]) for f in files)
    assert len(rendered) == expected
    assert sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml") == sorted(files)
    for obj in rendered:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qcdr"

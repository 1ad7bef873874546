"""The two policies isolate_pod creates, built as dicts (never YAML text): see isolate_pod."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from qcdr_common.contracts.actions.v1 import ActionRequest

from qcdr_response.actions.cluster._k8s import Record

CNP_API = "cilium.io/v2"
CNP_KIND = "CiliumNetworkPolicy"
NP_API = "networking.k8s.io/v1"
NP_KIND = "NetworkPolicy"
# everything but the local host: ``cluster`` and ``all`` are left out because they include it
DENIED_ENTITIES = ("world", "remote-node", "kube-apiserver", "ingress", "health", "init", "unmanaged")
# every endpoint in every namespace (a selector naming the namespace key is not scoped to the
# policy's own namespace)
ALL_ENDPOINTS = {"matchExpressions": [{"key": "io.kubernetes.pod.namespace", "operator": "Exists"}]}


class PolicyRef(BaseModel):
    api_version: str
    kind: str
    name: str


class IsolateRecord(Record):
    namespace: str
    pod: str
    pod_uid: str
    label_key: str
    label_value: str
    policies: list[PolicyRef]


def quarantine_value(action_id: int) -> str:
    return f"qcdr-{action_id}"


def policy_name(action_id: int) -> str:
    return f"qcdr-isolate-{action_id}"


def _metadata(request: ActionRequest, namespace: str) -> dict[str, Any]:
    # No app.kubernetes.io/managed-by=qcdr: the policy pipeline prunes the objects carrying it.
    meta: dict[str, Any] = {
        "name": policy_name(request.action_id),
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/part-of": "qcdr",
            "app.kubernetes.io/component": "isolate-pod",
            "qcdr.qualys.com/action-id": str(request.action_id),
        },
    }
    annotations = {"qcdr.qualys.com/pod": f"{namespace}/{request.target.pod}"}
    if request.reason:
        annotations["qcdr.qualys.com/reason"] = request.reason
    if request.finding_id:
        annotations["qcdr.qualys.com/finding"] = request.finding_id
    meta["annotations"] = annotations
    return meta


def cilium_policy(request: ActionRequest, namespace: str, label: str) -> dict[str, Any]:
    selector = {"matchLabels": {label: quarantine_value(request.action_id)}}
    return {
        "apiVersion": CNP_API,
        "kind": CNP_KIND,
        "metadata": _metadata(request, namespace),
        "spec": {
            "description": f"qcdr isolate_pod action {request.action_id}: deny all traffic but the "
            "local host's (kubelet probes)",
            "endpointSelector": selector,
            "enableDefaultDeny": {"ingress": True, "egress": True},
            "ingress": [{"fromEntities": ["host"]}],
            "egress": [{"toEntities": ["host"]}],
            "ingressDeny": [{"fromEntities": list(DENIED_ENTITIES)}, {"fromEndpoints": [ALL_ENDPOINTS]}],
            "egressDeny": [{"toEntities": list(DENIED_ENTITIES)}, {"toEndpoints": [ALL_ENDPOINTS]}],
        },
    }


def network_policy(request: ActionRequest, namespace: str, label: str) -> dict[str, Any]:
    return {
        "apiVersion": NP_API,
        "kind": NP_KIND,
        "metadata": _metadata(request, namespace),
        "spec": {
            "podSelector": {"matchLabels": {label: quarantine_value(request.action_id)}},
            "policyTypes": ["Ingress", "Egress"],
        },
    }

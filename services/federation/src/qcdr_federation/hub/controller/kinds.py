"""The three federation kinds (``federation.qualys.com/v1alpha1``, cluster-scoped) and which
Tetragon/Cilium kind a federated policy's template becomes."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from typing import Any

from lightkube.generic_resource import GenericGlobalResource, create_global_resource
from qcdr_common.contracts.federation.v1 import PolicyKind

GROUP = "federation.qualys.com"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# every hub object the controller makes carries this source ("api" for the REST API)
SOURCE = "crd"


class CrdKind(StrEnum):
    CLUSTER = "FederatedCluster"
    TRACING_POLICY = "FederatedTracingPolicy"
    NETWORK_POLICY = "FederatedNetworkPolicy"


PLURALS: dict[CrdKind, str] = {
    CrdKind.CLUSTER: "federatedclusters",
    CrdKind.TRACING_POLICY: "federatedtracingpolicies",
    CrdKind.NETWORK_POLICY: "federatednetworkpolicies",
}
POLICY_CRD_KINDS = (CrdKind.TRACING_POLICY, CrdKind.NETWORK_POLICY)

# (cluster-wide, namespaced) template kind of each policy CRD, with its apiVersion
_TEMPLATE_KINDS: dict[CrdKind, tuple[str, PolicyKind, PolicyKind]] = {
    CrdKind.TRACING_POLICY: (
        "cilium.io/v1alpha1",
        PolicyKind.TRACING_POLICY,
        PolicyKind.TRACING_POLICY_NAMESPACED,
    ),
    CrdKind.NETWORK_POLICY: (
        "cilium.io/v2",
        PolicyKind.CILIUM_CLUSTERWIDE_NETWORK_POLICY,
        PolicyKind.CILIUM_NETWORK_POLICY,
    ),
}


def template_kind(kind: CrdKind, *, namespaced: bool) -> tuple[str, PolicyKind]:
    """The apiVersion and kind a policy CRD's template becomes (namespaced: ``metadata.namespace`` set)."""
    api_version, cluster_wide, namespaced_kind = _TEMPLATE_KINDS[kind]
    return api_version, namespaced_kind if namespaced else cluster_wide


def crd_kind_of(policy_kind: str) -> CrdKind | None:
    """Which policy CRD a hub policy of this template kind comes from (None: not a known kind)."""
    for crd, (_, cluster_wide, namespaced_kind) in _TEMPLATE_KINDS.items():
        if policy_kind in (cluster_wide.value, namespaced_kind.value):
            return crd
    return None


@cache
def resource(kind: CrdKind) -> type[GenericGlobalResource]:
    """The lightkube generic resource of a kind (registered once per process)."""
    return create_global_resource(GROUP, VERSION, kind.value, PLURALS[kind])


def as_dict(obj: Any) -> dict[str, Any]:
    """A lightkube generic object (a dict subclass) as a plain dict."""
    to_dict = getattr(obj, "to_dict", None)
    value = to_dict() if callable(to_dict) else obj
    return dict(value) if isinstance(value, Mapping) else {}

"""The kinds the test API server can serve, and its discovery documents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from qcdr_common.testing.schemas import Issue

# The verbs every served kind supports.
VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


class Subresource(NamedTuple):
    """A subresource (``pods/eviction``, ``deployments/scale``): the kind its requests carry and
    the verbs the real API server lists for it in discovery."""

    name: str
    group: str
    version: str
    kind: str
    verbs: tuple[str, ...]


EVICTION = Subresource("eviction", "policy", "v1", "Eviction", ("create",))
SCALE = Subresource("scale", "autoscaling", "v1", "Scale", ("get", "patch", "update"))


def status_subresource(group: str, version: str, kind: str) -> Subresource:
    """The ``/status`` subresource of a kind: it carries the kind itself."""
    return Subresource("status", group, version, kind, ("get", "patch", "update"))


class ObjectSchema(Protocol):
    """How a kind's objects are checked before they are stored (a CRD's ``openAPIV3Schema``)."""

    def prepare(self, obj: dict[str, Any]) -> None:
        """Normalise ``obj`` in place as the API server does before validating (prune, default)."""

    def issues(self, obj: Mapping[str, Any]) -> list[Issue]:
        """What is wrong with ``obj``; empty when it may be stored."""


class GVK(NamedTuple):
    group: str  # "" for the core group
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class ResourceType:
    """A kind as the API server knows it: where it lives (plural, scope) and how discovery shows it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    custom: bool = False  # served from a CustomResourceDefinition (no strategic merge patch)
    short_names: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    # Without a status subresource, a CRD's ``status`` is an ordinary field written with the object;
    # False for the built-in kinds here, whose status is dropped on every write (no controllers).
    status_is_field: bool = False
    # Checked and normalised before storing (a CRD's schema); None: only the server-wide validator.
    schema: ObjectSchema | None = field(default=None, compare=False, repr=False)

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)

    @property
    def has_status(self) -> bool:
        """Served with a ``/status`` subresource: main-resource writes keep the stored status."""
        return self.subresource("status") is not None

    @property
    def gvk(self) -> GVK:
        return GVK(self.group, self.version, self.kind)

    @property
    def api_version(self) -> str:
        return self.gvk.api_version

    @property
    def qualified_plural(self) -> str:
        """``tracingpolicies.cilium.io`` (``configmaps`` for the core group), as error messages say it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def discovery(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry

    def subresource_discovery(self) -> list[dict[str, Any]]:
        """Discovery entries of the subresources, as the real server lists them (``pods/eviction``)."""
        return [
            {
                "name": f"{self.plural}/{sub.name}",
                "singularName": "",
                "namespaced": self.namespaced,
                "group": sub.group,
                "version": sub.version,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            for sub in self.subresources
        ]


def _r(
    group: str,
    version: str,
    kind: str,
    plural: str,
    namespaced: bool,
    *short: str,
    subresources: tuple[Subresource, ...] = (),
) -> ResourceType:
    return ResourceType(
        group,
        version,
        kind,
        plural,
        namespaced,
        custom="." in group and not group.endswith(".k8s.io"),
        short_names=short,
        subresources=subresources,
    )


KNOWN_RESOURCES: dict[GVK, ResourceType] = {
    r.gvk: r
    for r in (
        _r("", "v1", "Namespace", "namespaces", False, "ns"),
        _r("", "v1", "ConfigMap", "configmaps", True, "cm"),
        _r("", "v1", "Node", "nodes", False, "no"),
        _r("", "v1", "Pod", "pods", True, "po", subresources=(EVICTION,)),
        _r("", "v1", "Secret", "secrets", True),
        _r("", "v1", "Service", "services", True, "svc"),
        _r("", "v1", "ServiceAccount", "serviceaccounts", True, "sa"),
        _r("apps", "v1", "Deployment", "deployments", True, "deploy", subresources=(SCALE,)),
        _r("apps", "v1", "ReplicaSet", "replicasets", True, "rs", subresources=(SCALE,)),
        _r("apps", "v1", "StatefulSet", "statefulsets", True, "sts", subresources=(SCALE,)),
        _r("apps", "v1", "DaemonSet", "daemonsets", True, "ds"),
        _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, "pdb"),
        _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, "netpol"),
        _r(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            False,
        ),
        _r("cilium.io", "v1alpha1", "TracingPolicy", "tracingpolicies", False, "tgtp"),
        _r("cilium.io", "v1alpha1", "TracingPolicyNamespaced", "tracingpoliciesnamespaced", True, "tgtpn"),
        _r("cilium.io", "v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies", True, "cnp", "ciliumnp"),
        _r(
            "cilium.io",
            "v2",
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies",
            False,
            "ccnp",
        ),
        _r("cilium.io", "v2", "CiliumCIDRGroup", "ciliumcidrgroups", False, "ccg"),
        _r("cilium.io", "v2alpha1", "CiliumCIDRGroup", "ciliumcidrgroups", False, "ccg"),
    )
}

DEFAULT_INSTALLED: frozenset[GVK] = frozenset(
    {
        GVK("", "v1", "Namespace"),
        GVK("", "v1", "ConfigMap"),
        GVK("", "v1", "Pod"),
        GVK("networking.k8s.io", "v1", "NetworkPolicy"),
        GVK("cilium.io", "v1alpha1", "TracingPolicy"),
        GVK("cilium.io", "v1alpha1", "TracingPolicyNamespaced"),
        GVK("cilium.io", "v2", "CiliumNetworkPolicy"),
        GVK("cilium.io", "v2", "CiliumClusterwideNetworkPolicy"),
        GVK("cilium.io", "v2", "CiliumCIDRGroup"),
        GVK("cilium.io", "v2alpha1", "CiliumCIDRGroup"),
    }
)


def resolve(installed: Iterable[GVK | ResourceType | tuple[str, str, str]]) -> list[ResourceType]:
    """ResourceTypes for what a caller asked to install; a GVK must be one of ``KNOWN_RESOURCES``."""
    out: list[ResourceType] = []
    for item in installed:
        if isinstance(item, ResourceType):
            out.append(item)
            continue
        gvk = GVK(*item)
        known = KNOWN_RESOURCES.get(gvk)
        if known is None:
            raise ValueError(f"unknown kind {gvk}: pass a ResourceType with its plural and scope")
        out.append(known)
    return out


class Discovery:
    """The discovery documents (``/api``, ``/apis``, ``/apis/{group}/{version}``) of a set of kinds."""

    def __init__(self, types: Iterable[ResourceType]) -> None:
        self.by_group_version: dict[tuple[str, str], dict[str, ResourceType]] = {}
        for rt in types:
            self.by_group_version.setdefault((rt.group, rt.version), {})[rt.plural] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.by_group_version.get((group, version), {}).get(plural)

    def find_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.by_group_version.get((group, version), {}).values():
            if rt.kind == kind:
                return rt
        return None

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        types = self.by_group_version.get((group, version))
        if types is None:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [
                entry
                for rt in sorted(types.values(), key=lambda r: r.plural)
                for entry in (rt.discovery(), *rt.subresource_discovery())
            ],
        }

    def core_versions(self, server_address: str) -> dict[str, Any]:
        versions = sorted({v for g, v in self.by_group_version if g == ""}) or ["v1"]
        return {
            "kind": "APIVersions",
            "versions": versions,
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }

    def group(self, name: str) -> dict[str, Any] | None:
        versions = sorted(v for g, v in self.by_group_version if g == name)
        if not name or not versions:
            return None
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": entries,
            "preferredVersion": entries[-1],
        }

    def group_list(self) -> dict[str, Any]:
        names = sorted({g for g, _ in self.by_group_version if g})
        groups = [self.group(n) for n in names]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [g for g in groups if g]}

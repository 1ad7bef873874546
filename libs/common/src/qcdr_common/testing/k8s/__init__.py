"""A Kubernetes API test server (no real kube-apiserver can run in CI); see ``server.K8sTestServer``."""

from qcdr_common.testing.k8s.app import RequestRecord
from qcdr_common.testing.k8s.crds import CrdSchema, crd_resource_type, crd_resource_types, load_crds
from qcdr_common.testing.k8s.resources import (
    DEFAULT_INSTALLED,
    GVK,
    KNOWN_RESOURCES,
    ResourceType,
    Subresource,
    status_subresource,
)
from qcdr_common.testing.k8s.server import K8sTestServer
from qcdr_common.testing.k8s.status import StatusError
from qcdr_common.testing.k8s.store import ObjectKey

__all__ = [
    "DEFAULT_INSTALLED",
    "GVK",
    "KNOWN_RESOURCES",
    "CrdSchema",
    "K8sTestServer",
    "ObjectKey",
    "RequestRecord",
    "ResourceType",
    "StatusError",
    "Subresource",
    "crd_resource_type",
    "crd_resource_types",
    "load_crds",
    "status_subresource",
]

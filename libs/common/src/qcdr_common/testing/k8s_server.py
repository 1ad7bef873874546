"""The shared Kubernetes API test server. The implementation lives in ``qcdr_common.testing.k8s``
(split by concern: resources, CRDs, selectors, field ownership, store, change history, watches,
HTTP app, server); this module is the stable import path."""

from qcdr_common.testing.k8s import (
    DEFAULT_INSTALLED,
    GVK,
    KNOWN_RESOURCES,
    CrdSchema,
    K8sTestServer,
    ObjectKey,
    RequestRecord,
    ResourceType,
    StatusError,
    crd_resource_type,
    crd_resource_types,
    load_crds,
)

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
    "crd_resource_type",
    "crd_resource_types",
    "load_crds",
]

"""The shared Kubernetes API test server. The implementation lives in ``qcdr_common.testing.k8s``
(split by concern: resources, selectors, field ownership, store, HTTP app, server); this module is
the stable import path."""

from qcdr_common.testing.k8s import (
    DEFAULT_INSTALLED,
    GVK,
    KNOWN_RESOURCES,
    K8sTestServer,
    ObjectKey,
    RequestRecord,
    ResourceType,
    StatusError,
)

__all__ = [
    "DEFAULT_INSTALLED",
    "GVK",
    "KNOWN_RESOURCES",
    "K8sTestServer",
    "ObjectKey",
    "RequestRecord",
    "ResourceType",
    "StatusError",
]

"""Who a profile or a baseline belongs to.

A *workload* is its owner, not its pod: the pods of one Deployment come and go with new names,
and a profile keyed by pod name would start learning again on every rollout. Where the owner is
unknown (a bare pod, an event without pod metadata) the pod, then the container, stands in.

A *profile* is keyed by image digest: every replica of an image, in every workload that runs it,
shares what the image does, so new pods of a known image start warm. Without a digest the image
reference is used, and without an image the workload itself.
"""

from __future__ import annotations

from qcdr_common.contracts.events.v1 import Workload

UNKNOWN = "-"


def workload_key(workload: Workload) -> str:
    """``cluster/namespace/Kind/name`` of the owner (``Pod``/``Container`` when there is none)."""
    cluster = workload.cluster or UNKNOWN
    namespace = workload.namespace or UNKNOWN
    if workload.owner_name:
        return f"{cluster}/{namespace}/{workload.owner_kind or 'Workload'}/{workload.owner_name}"
    if workload.pod:
        return f"{cluster}/{namespace}/Pod/{workload.pod}"
    if workload.container_id:
        return f"{cluster}/{namespace}/Container/{workload.container_id}"
    return f"{cluster}/{namespace}/{UNKNOWN}/{UNKNOWN}"


def profile_key(workload: Workload) -> str:
    """``sha256:…`` (the image digest), else ``image:<reference>``, else ``workload:<workload key>``."""
    if workload.image_digest:
        digest = workload.image_digest
        return digest if digest.startswith("sha256:") else f"sha256:{digest}"
    if workload.image:
        return f"image:{workload.image}"
    return f"workload:{workload_key(workload)}"


def has_identity(workload: Workload) -> bool:
    """Whether events of this workload can be profiled at all (a namespace or an owner or a pod)."""
    return bool(workload.owner_name or workload.pod or workload.container_id)

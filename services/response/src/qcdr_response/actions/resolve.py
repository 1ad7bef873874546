"""Completing a node action's target from the cluster: which node the pod runs on, its UID, and
the container's runtime id. Node agents only see containers, so this happens before the request
goes to a node."""

from __future__ import annotations

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Pod
from qcdr_common.contracts.actions.v1 import ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import ActionError, InvalidRequestError, TargetGoneError


async def node_target(client: AsyncClient, target: ActionTarget) -> ActionTarget:
    if target.node and (target.container_id or target.pid):
        return target
    if not target.namespace or not target.pod:
        raise InvalidRequestError("a node action needs target.node, or namespace and pod to look it up")
    try:
        pod = await client.get(Pod, target.pod, namespace=target.namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            raise TargetGoneError(f"pod {target.namespace}/{target.pod} is gone") from None
        raise ActionError(
            f"get pod {target.namespace}/{target.pod}: {exc.status.code} {exc.status.message}"
        ) from None
    uid = pod.metadata.uid if pod.metadata else None
    if target.pod_uid and uid != target.pod_uid:
        raise TargetGoneError(
            f"pod {target.namespace}/{target.pod} was replaced (UID {uid}, not {target.pod_uid})"
        )
    node = target.node or (pod.spec.nodeName if pod.spec else None)
    if not node:
        raise ActionError(f"pod {target.namespace}/{target.pod} is not scheduled on a node")
    container_id = target.container_id
    if container_id is None:
        statuses = [s for s in (pod.status.containerStatuses or []) if s.containerID] if pod.status else []
        if target.container:
            statuses = [s for s in statuses if s.name == target.container]
        if len(statuses) != 1:
            which = f"container {target.container!r}" if target.container else "a single running container"
            raise ActionError(f"pod {target.namespace}/{target.pod}: cannot tell {which} from its status")
        container_id = validation.container_id(statuses[0].containerID or "")
    return target.model_copy(
        update={"node": node, "pod_uid": target.pod_uid or uid, "container_id": container_id}
    )

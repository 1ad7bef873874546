"""cordon_node: mark a node unschedulable (``spec.unschedulable``), the node named by the target
or the one the target pod runs on. Pods already there keep running; nothing new is scheduled.
Undo uncordons only a node that was schedulable before the action (recorded)."""

from __future__ import annotations

from typing import Any, ClassVar

from lightkube.resources.core_v1 import Node
from pydantic import BaseModel
from qcdr_common.contracts.actions.v1 import ActionRequest, ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import ActionError, Done, InvalidRequestError, NoParams, TargetGoneError
from qcdr_response.actions.cluster._context import ClusterContext
from qcdr_response.actions.cluster._k8s import (
    ClusterAction,
    Record,
    as_dict,
    call,
    done,
    get_pod,
    merge_patch,
    step,
)
from qcdr_response.actions.registry import ACTIONS

CORDONED_BY = "qcdr.qualys.com/cordoned-by"


class CordonRecord(Record):
    node: str
    uid: str
    was_unschedulable: bool


class CordonNode(ClusterAction):
    name = "cordon_node"
    description = (
        "Cordon a node (the target's, or the target pod's); undo uncordons it if it was schedulable."
    )
    params = NoParams
    reversible = True
    permissions: ClassVar[tuple[str, ...]] = ("nodes:get", "nodes:patch", "pods:get")

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        if not target.node and not (target.namespace and target.pod):
            raise InvalidRequestError(f"{self.name} needs target field(s): node, or namespace and pod")

    async def node_name(self, ctx: ClusterContext, target: ActionTarget) -> str:
        if target.node:
            return target.node
        pod = await get_pod(ctx, target)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise ActionError(f"pod {target.namespace}/{target.pod} is not scheduled on a node")
        return validation.dns1123_subdomain(str(node), "node")

    async def _node(self, ctx: ClusterContext, name: str) -> dict[str, Any]:
        return as_dict(await call(ctx.client.get(Node, name), "get", "node", None, name, target=True))

    async def _set(
        self, ctx: ClusterContext, request: ActionRequest, name: str, uid: str, value: bool | None
    ) -> dict[str, Any]:
        # None removes the field (false is its default), as kubectl uncordon's patch does. The
        # annotation says which action cordoned the node, in the same patch: recovery after a
        # crash can then tell this action's cordon from one that was there before.
        mark = str(request.action_id) if value else None
        patch = {
            "metadata": {"uid": uid, "annotations": {CORDONED_BY: mark}},
            "spec": {"unschedulable": value},
        }
        await merge_patch(ctx, request, Node, "Node", None, name, patch)
        return step("patch", "Node", None, name, patch)

    async def execute(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        self.prepare(request, NoParams)
        name = await self.node_name(ctx, request.target)
        node = await self._node(ctx, name)
        uid = str(node["metadata"]["uid"])
        was = bool((node.get("spec") or {}).get("unschedulable"))
        steps = [] if was else [await self._set(ctx, request, name, uid, True)]
        record = CordonRecord(node=name, uid=uid, was_unschedulable=was)
        already = " (it already was)" if was else ""
        return done(request, f"cordoned node {name}{already}", f"cordon node {name}{already}", steps, record)

    async def undo(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        record = self.record(request, CordonRecord)
        validation.dns1123_subdomain(record.node, "node")
        if record.was_unschedulable:
            message = f"node {record.node} was cordoned before the action: left cordoned"
            return done(request, message, message, [])
        node = await self._node(ctx, record.node)
        if node["metadata"].get("uid") != record.uid:
            raise TargetGoneError(f"node {record.node} was replaced (UID {node['metadata'].get('uid')})")
        steps = []
        if (node.get("spec") or {}).get("unschedulable") or CORDONED_BY in _annotations(node):
            steps.append(await self._set(ctx, request, record.node, record.uid, None))
        return done(request, f"uncordoned node {record.node}", f"uncordon node {record.node}", steps)

    async def present(self, ctx: ClusterContext, request: ActionRequest) -> bool:
        node = await self._node(ctx, await self.node_name(ctx, request.target))
        return bool((node.get("spec") or {}).get("unschedulable"))

    async def recovered_undo(self, ctx: ClusterContext, request: ActionRequest) -> dict[str, Any] | None:
        name = await self.node_name(ctx, request.target)
        node = await self._node(ctx, name)
        ours = _annotations(node).get(CORDONED_BY) == str(request.action_id)
        record = CordonRecord(node=name, uid=str(node["metadata"]["uid"]), was_unschedulable=not ours)
        return record.model_dump(mode="json")


def _annotations(node: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = node.get("metadata", {}).get("annotations") or {}
    return found


ACTIONS.add(CordonNode.name, CordonNode(), __name__)

"""``unpause_container``: thaw a paused container (the manual counterpart of pause's undo)."""

from __future__ import annotations

from qcdr_common.contracts.actions.v1 import ActionRequest

from qcdr_response.actions.base import Action, Done, Scope
from qcdr_response.actions.node._context import NodeContext, load, status
from qcdr_response.actions.node.pause_container import thaw
from qcdr_response.actions.registry import ACTIONS


class UnpauseContainer(Action[NodeContext]):
    name = "unpause_container"
    scope = Scope.NODE
    description = "Unpause (thaw) a paused container."
    requires = ("container_id",)
    permissions = ("docker.sock: POST /containers/{id}/unpause",)

    async def present(self, ctx: NodeContext, request: ActionRequest) -> bool:
        box = await load(ctx, request.target)
        return await status(box) != "paused"

    async def execute(self, ctx: NodeContext, request: ActionRequest) -> Done:
        return await thaw(await load(ctx, request.target), request.dry_run)


ACTIONS.add(UnpauseContainer.name, UnpauseContainer(), __name__)

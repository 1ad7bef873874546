"""``pause_container``: freeze every process of a container (cgroup freezer) while keeping its
memory, sockets and files as they are, for forensics. Containment: it carries a lease, and the
undo (on expiry or by request) unpauses the container it paused."""

from __future__ import annotations

from typing import Any

from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome, ActionRequest

from qcdr_response.actions.base import Action, ActionError, Done, InvalidRequestError, Scope
from qcdr_response.actions.node._context import Box, NodeContext, blocking, load, require_running, status
from qcdr_response.actions.registry import ACTIONS


def undo_container(request: ActionRequest) -> str:
    """The container id ``execute`` recorded in the undo record."""
    record = request.undo or {}
    cid = record.get("container_id")
    if not isinstance(cid, str):
        raise InvalidRequestError("undo record has no container_id")
    return cid


class PauseContainer(Action[NodeContext]):
    name = "pause_container"
    scope = Scope.NODE
    description = "Pause (freeze) the container's processes; undo unpauses it."
    requires = ("container_id",)
    containment = True
    reversible = True
    permissions = ("docker.sock: POST /containers/{id}/pause, /unpause",)

    async def present(self, ctx: NodeContext, request: ActionRequest) -> bool:
        if request.op is ActionOp.UNDO:
            box = await load(ctx, request.target, undo_container(request))
            return await status(box) != "paused"
        box = await load(ctx, request.target)
        return await status(box) == "paused"

    async def recovered_undo(self, ctx: NodeContext, request: ActionRequest) -> dict[str, Any] | None:
        return {"container_id": (await load(ctx, request.target)).id}

    async def execute(self, ctx: NodeContext, request: ActionRequest) -> Done:
        box = await load(ctx, request.target)
        require_running(box)
        details = box.describe()
        undo = {"container_id": box.id}
        if box.status == "paused":
            return Done(ActionOutcome.SUCCEEDED, f"container {box.id[:12]} is already paused", details, undo)
        if request.dry_run:
            return Done(ActionOutcome.DRY_RUN, f"would pause container {box.id[:12]}", details, undo)
        await blocking(box.runtime.pause, box.info)
        if (now := await status(box)) != "paused":
            raise ActionError(f"container {box.id[:12]} is {now} after pause")
        return Done(
            ActionOutcome.SUCCEEDED, f"paused container {box.id[:12]}", {**details, "status": now}, undo
        )

    async def undo(self, ctx: NodeContext, request: ActionRequest) -> Done:
        return await thaw(await load(ctx, request.target, undo_container(request)), request.dry_run)


async def thaw(box: Box, dry_run: bool) -> Done:
    """Unpause ``box`` (the undo of pause, and the unpause action)."""
    details = box.describe()
    if box.status != "paused":
        return Done(ActionOutcome.SUCCEEDED, f"container {box.id[:12]} is not paused ({box.status})", details)
    if dry_run:
        return Done(ActionOutcome.DRY_RUN, f"would unpause container {box.id[:12]}", details)
    await blocking(box.runtime.unpause, box.info)
    if (now := await status(box)) == "paused":
        raise ActionError(f"container {box.id[:12]} is still paused after unpause")
    return Done(ActionOutcome.SUCCEEDED, f"unpaused container {box.id[:12]}", {**details, "status": now})


ACTIONS.add(PauseContainer.name, PauseContainer(), __name__)

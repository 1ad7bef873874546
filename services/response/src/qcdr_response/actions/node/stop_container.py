"""``stop_container``: stop a pod's container through the Docker Engine API (SIGTERM, then
SIGKILL after ``timeout`` seconds). Kubelet will restart it if the pod's restart policy says so:
stop halts what runs now; isolation or scaling the owner keeps it from coming back."""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionRequest

from qcdr_response.actions.base import Action, ActionError, Done, Scope
from qcdr_response.actions.node._context import NodeContext, blocking, load, status
from qcdr_response.actions.registry import ACTIONS


class StopParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: int = Field(default=10, ge=0, le=300, description="Seconds between SIGTERM and SIGKILL.")


class StopContainer(Action[NodeContext]):
    name = "stop_container"
    scope = Scope.NODE
    description = "Stop the container (docker stop): SIGTERM, then SIGKILL after the timeout."
    requires = ("container_id",)
    params = StopParams
    permissions = ("docker.sock: POST /containers/{id}/stop",)

    async def present(self, ctx: NodeContext, request: ActionRequest) -> bool:
        box = await load(ctx, request.target)
        return await status(box) not in ("running", "paused", "restarting")

    async def execute(self, ctx: NodeContext, request: ActionRequest) -> Done:
        p = cast(StopParams, self.parse_params(request.parameters))
        box = await load(ctx, request.target)
        details = {**box.describe(), "timeout": p.timeout}
        if box.status not in ("running", "paused", "restarting"):
            return Done(ActionOutcome.SUCCEEDED, f"container {box.id[:12]} is already {box.status}", details)
        if request.dry_run:
            return Done(ActionOutcome.DRY_RUN, f"would stop container {box.id[:12]}", details)
        await blocking(box.runtime.stop, box.info, p.timeout)
        now = await status(box)
        if now in ("running", "paused", "restarting"):
            raise ActionError(f"container {box.id[:12]} is still {now} after stop")
        return Done(ActionOutcome.SUCCEEDED, f"stopped container {box.id[:12]}", {**details, "status": now})


ACTIONS.add(StopContainer.name, StopContainer(), __name__)

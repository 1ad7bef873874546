"""delete_pod: delete a pod with a grace period (its controller, if any, starts a new one)."""

from __future__ import annotations

from typing import ClassVar

from lightkube.resources.core_v1 import Pod
from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.actions.v1 import ActionRequest

from qcdr_response.actions.base import Done
from qcdr_response.actions.cluster._context import ClusterContext
from qcdr_response.actions.cluster._k8s import (
    ClusterAction,
    call,
    done,
    get_pod,
    pod_gone_or_going,
    pod_ref,
    step,
)
from qcdr_response.actions.registry import ACTIONS


class DeleteParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_period_seconds: int = Field(default=30, ge=0, le=86_400)


class DeletePod(ClusterAction):
    name = "delete_pod"
    description = "Delete a pod (grace period 30 s by default); the effect is the pod gone or replaced."
    requires = ("namespace", "pod")
    params = DeleteParams
    permissions: ClassVar[tuple[str, ...]] = ("pods:get", "pods:delete")

    async def execute(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        params = self.prepare(request, DeleteParams)
        namespace, name = pod_ref(request.target)
        await get_pod(ctx, request.target)  # gone or replaced (UID): skipped, never a look-alike
        await call(
            ctx.client.delete(
                Pod,
                name,
                namespace=namespace,
                grace_period=params.grace_period_seconds,
                dry_run=request.dry_run,
            ),
            "delete",
            "pod",
            namespace,
            name,
            target=True,
        )
        steps = [step("delete", "Pod", namespace, name, {"gracePeriodSeconds": params.grace_period_seconds})]
        subject = f"pod {namespace}/{name} (grace period {params.grace_period_seconds} s)"
        return done(request, f"deleted {subject}", f"delete {subject}", steps)

    async def present(self, ctx: ClusterContext, request: ActionRequest) -> bool:
        return await pod_gone_or_going(ctx, request.target)


ACTIONS.add(DeletePod.name, DeletePod(), __name__)

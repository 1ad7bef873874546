"""evict_pod: evict a pod through the eviction API, so PodDisruptionBudgets are honoured (a
budget that forbids it answers 429, reported with the server's message)."""

from __future__ import annotations

from typing import ClassVar

from lightkube.models.meta_v1 import DeleteOptions, ObjectMeta, Preconditions
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


class EvictParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # None: the pod's own terminationGracePeriodSeconds
    grace_period_seconds: int | None = Field(default=None, ge=0, le=86_400)


class EvictPod(ClusterAction):
    name = "evict_pod"
    description = "Evict a pod (policy/v1 Eviction): like delete_pod, but PodDisruptionBudgets can refuse it."
    requires = ("namespace", "pod")
    params = EvictParams
    permissions: ClassVar[tuple[str, ...]] = ("pods:get", "pods/eviction:create")

    async def execute(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        params = self.prepare(request, EvictParams)
        namespace, name = pod_ref(request.target)
        pod = await get_pod(ctx, request.target)
        # the UID precondition: the server refuses if the pod was replaced since it was read
        options = DeleteOptions(
            gracePeriodSeconds=params.grace_period_seconds,
            preconditions=Preconditions(uid=pod["metadata"]["uid"]),
        )
        eviction = Pod.Eviction(metadata=ObjectMeta(name=name, namespace=namespace), deleteOptions=options)
        await call(
            ctx.client.create(
                eviction, name, namespace=namespace, field_manager=ctx.field_manager, dry_run=request.dry_run
            ),
            "evict",
            "pod",
            namespace,
            name,
            target=True,
        )
        steps = [step("create", "Eviction", namespace, name, eviction.to_dict())]
        subject = f"pod {namespace}/{name}"
        return done(request, f"evicted {subject}", f"evict {subject}", steps)

    async def present(self, ctx: ClusterContext, request: ActionRequest) -> bool:
        return await pod_gone_or_going(ctx, request.target)


ACTIONS.add(EvictPod.name, EvictPod(), __name__)

"""scale_to_zero: scale the workload that owns a pod to zero replicas through its scale subresource.

The owner is the target's ``owner_kind``/``owner_name``, or resolved from the pod's controller
reference: Pod → ReplicaSet → its Deployment (a bare ReplicaSet is scaled itself), Pod →
StatefulSet. DaemonSets have no replica count and are refused. Undo restores the recorded count,
but only while the owner still has the zero this action set: a count someone changed since wins,
and undo says so.

Before scaling, the owner is annotated ``qcdr.qualys.com/scaled-to-zero`` with the action id and
the count it had (as Argo Rollouts and KEDA keep a scaled-down count on the object). A crash after
the scale and before the result was recorded then loses nothing: recovery finds the owner by that
annotation even when the target pod is gone (it is, at zero replicas: the candidates come from the
pod's name) and rebuilds the undo record; undo removes the annotation.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, ClassVar

from lightkube.resources.apps_v1 import Deployment, ReplicaSet, StatefulSet
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

SCALABLE: dict[str, Any] = {"Deployment": Deployment, "StatefulSet": StatefulSet, "ReplicaSet": ReplicaSet}
NOT_SCALABLE = "DaemonSets cannot be scaled (one pod per node, no replica count)"
SCALED_BY = "qcdr.qualys.com/scaled-to-zero"


class ScaleRecord(Record):
    namespace: str
    kind: str
    name: str
    uid: str
    previous_replicas: int
    replicas: int = 0


def _controller(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the controller reference; a kind outside ``apps/v1`` (OpenKruise's
    StatefulSet, Argo's Rollout, ...) is prefixed with its apiVersion, so it never matches ours."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            kind = str(ref.get("kind"))
            if ref.get("apiVersion") != "apps/v1":
                kind = f"{ref.get('apiVersion')} {kind}"
            return kind, str(ref.get("name"))
    return None


class ScaleToZero(ClusterAction):
    name = "scale_to_zero"
    description = (
        "Scale the Deployment, StatefulSet or ReplicaSet owning a pod to 0; undo restores the count."
    )
    requires = ("namespace",)
    params = NoParams
    reversible = True
    permissions: ClassVar[tuple[str, ...]] = (
        "pods:get",
        "deployments.apps:get",
        "deployments.apps:patch",
        "statefulsets.apps:get",
        "statefulsets.apps:patch",
        "replicasets.apps:get",
        "replicasets.apps:patch",
        "deployments.apps/scale:get",
        "deployments.apps/scale:patch",
        "statefulsets.apps/scale:get",
        "statefulsets.apps/scale:patch",
        "replicasets.apps/scale:get",
        "replicasets.apps/scale:patch",
    )

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        if target.owner_kind or target.owner_name:
            if not (target.owner_kind and target.owner_name):
                raise InvalidRequestError(f"{self.name}: owner_kind and owner_name go together")
            if target.owner_kind == "DaemonSet":
                raise InvalidRequestError(f"{self.name}: {NOT_SCALABLE}")
            if target.owner_kind not in SCALABLE:
                raise InvalidRequestError(f"{self.name}: owner_kind must be one of {', '.join(SCALABLE)}")
        elif not target.pod:
            raise InvalidRequestError(f"{self.name} needs target field(s): pod, or owner_kind and owner_name")

    async def owner(self, ctx: ClusterContext, target: ActionTarget) -> tuple[str, str]:
        namespace = str(target.namespace)
        if target.owner_kind and target.owner_name:
            return target.owner_kind, target.owner_name
        pod = await get_pod(ctx, target)
        owner = _controller(pod)
        if owner and owner[0] == "ReplicaSet":
            rs = as_dict(
                await call(
                    ctx.client.get(ReplicaSet, owner[1], namespace=namespace),
                    "get",
                    "replicaset",
                    namespace,
                    owner[1],
                    target=True,
                )
            )
            above = _controller(rs)
            if above is not None and above[0] != "Deployment":
                raise ActionError(
                    f"{self.name}: ReplicaSet {namespace}/{owner[1]} is controlled by {above[0]} {above[1]}, "
                    "which would scale it back up"
                )
            owner = above or owner
        if owner is None:
            raise ActionError(f"pod {namespace}/{target.pod} has no controller to scale")
        if owner[0] == "DaemonSet":
            raise ActionError(f"{self.name}: {NOT_SCALABLE} (pod {namespace}/{target.pod})")
        if owner[0] not in SCALABLE:
            raise ActionError(
                f"{self.name}: the pod's owner {owner[0]} {owner[1]} has no scale this action uses"
            )
        validation.dns1123_subdomain(owner[1], "owner name")
        return owner

    async def _scale(self, ctx: ClusterContext, kind: str, namespace: str, name: str) -> dict[str, Any]:
        scale = await call(
            ctx.client.get(SCALABLE[kind].Scale, name, namespace=namespace),
            "get",
            f"{kind.lower()}/scale",
            namespace,
            name,
            target=True,
        )
        return as_dict(scale)

    async def _set(
        self,
        ctx: ClusterContext,
        request: ActionRequest,
        kind: str,
        namespace: str,
        current: dict[str, Any],
        n: int,
    ) -> dict[str, Any]:
        meta = current["metadata"]
        # uid and resourceVersion are preconditions: a replaced or concurrently changed owner is refused
        patch = {
            "metadata": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
            "spec": {"replicas": n},
        }
        await merge_patch(ctx, request, SCALABLE[kind].Scale, f"{kind}/scale", namespace, meta["name"], patch)
        return step("patch", f"{kind}/scale", namespace, meta["name"], patch)

    async def _annotate(
        self,
        ctx: ClusterContext,
        request: ActionRequest,
        kind: str,
        namespace: str,
        meta: dict[str, Any],
        value: str | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Set (or, with None, remove) the annotation on the owner; (the owner after it, the step)."""
        preconditions = {"uid": meta["uid"]}
        if value is not None:
            # the count must be the one the scale read: a change in between refuses the patch
            preconditions["resourceVersion"] = meta["resourceVersion"]
        patch = {"metadata": {**preconditions, "annotations": {SCALED_BY: value}}}
        owner = await merge_patch(ctx, request, SCALABLE[kind], kind, namespace, meta["name"], patch)
        return owner, step("patch", kind, namespace, meta["name"], patch)

    async def execute(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        self.prepare(request, NoParams)
        namespace = str(request.target.namespace)
        kind, name = await self.owner(ctx, request.target)
        scale = await self._scale(ctx, kind, namespace, name)
        previous = int(scale["spec"].get("replicas") or 0)
        steps = [step("get", f"{kind}/scale", namespace, name)]
        if previous:
            mark = json.dumps({"action_id": request.action_id, "previous_replicas": previous})
            owner, annotated = await self._annotate(ctx, request, kind, namespace, scale["metadata"], mark)
            steps.append(annotated)
            # the annotation moved the owner's resourceVersion: the scale's precondition follows it
            rv = owner.get("metadata", {}).get("resourceVersion") or scale["metadata"]["resourceVersion"]
            scale = {**scale, "metadata": {**scale["metadata"], "resourceVersion": rv}}
            steps.append(await self._set(ctx, request, kind, namespace, scale, 0))
        record = ScaleRecord(
            namespace=namespace,
            kind=kind,
            name=name,
            uid=scale["metadata"]["uid"],
            previous_replicas=previous,
        )
        subject = f"{kind} {namespace}/{name} to 0 (from {previous})"
        return done(request, f"scaled {subject}", f"scale {subject}", steps, record)

    async def undo(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        record = self.record(request, ScaleRecord)
        if record.kind not in SCALABLE:
            raise InvalidRequestError(f"{self.name}: undo record names {record.kind}")
        validation.dns1123_label(record.namespace, "namespace")
        validation.dns1123_subdomain(record.name, "owner name")
        subject = f"{record.kind} {record.namespace}/{record.name}"
        scale = await self._scale(ctx, record.kind, record.namespace, record.name)
        if scale["metadata"].get("uid") != record.uid:
            raise TargetGoneError(
                f"{subject} was replaced (UID {scale['metadata'].get('uid')}, expected {record.uid})"
            )
        now = int(scale["spec"].get("replicas") or 0)
        if now != record.replicas:
            raise ActionError(
                f"replicas of {subject} changed since the action (now {now}, qcdr set {record.replicas}): "
                f"not restored to {record.previous_replicas}"
            )
        steps = [step("get", f"{record.kind}/scale", record.namespace, record.name)]
        if record.previous_replicas != now:
            steps.append(
                await self._set(ctx, request, record.kind, record.namespace, scale, record.previous_replicas)
            )
        notes: dict[str, str] = {}
        try:  # the count is back; a mark left behind only clutters the owner, so it is best effort
            owner = await self._owner_object(ctx, record.kind, record.namespace, record.name)
            if _mark(owner, request.action_id) is not None:
                _, forgot = await self._annotate(
                    ctx, request, record.kind, record.namespace, owner["metadata"], None
                )
                steps.append(forgot)
        except ActionError as exc:
            notes["annotation"] = f"{SCALED_BY} left on {subject}: {exc.reason}"
        target = f"{subject} to {record.previous_replicas}"
        return done(request, f"scaled {target}", f"scale {target}", steps, None, **notes)

    async def _owner_object(
        self, ctx: ClusterContext, kind: str, namespace: str, name: str
    ) -> dict[str, Any]:
        obj = await call(
            ctx.client.get(SCALABLE[kind], name, namespace=namespace),
            "get",
            kind.lower(),
            namespace,
            name,
            target=True,
        )
        return as_dict(obj)

    async def _marked_owner(
        self, ctx: ClusterContext, namespace: str, pod: str, action_id: int
    ) -> tuple[str, str] | None:
        """The owner this action annotated, found without the pod (gone once at zero replicas).

        No list permission: the pod's name gives the candidates (``<replicaset>-<suffix>``, whose
        ReplicaSet names its Deployment; ``<statefulset>-<ordinal>``), and only an owner carrying
        this action's mark is taken, so a wrong guess finds nothing rather than the wrong owner."""
        base = pod.rpartition("-")[0]
        if not base:
            return None
        candidates: list[tuple[str, str]] = []
        with contextlib.suppress(ActionError):
            rs = await self._owner_object(ctx, "ReplicaSet", namespace, base)
            above = _controller(rs)
            if above is not None and above[0] == "Deployment":
                candidates.append(above)
            candidates.append(("ReplicaSet", base))
        candidates.append(("StatefulSet", base))
        for kind, name in candidates:
            try:
                owner = await self._owner_object(ctx, kind, namespace, name)
            except ActionError:
                continue
            if _mark(owner, action_id) is not None:
                return kind, name
        return None

    async def _recovery_owner(self, ctx: ClusterContext, request: ActionRequest) -> tuple[str, str]:
        try:
            return await self.owner(ctx, request.target)
        except TargetGoneError:
            namespace, pod = str(request.target.namespace), str(request.target.pod or "")
            found = await self._marked_owner(ctx, namespace, pod, request.action_id)
            if found is None:
                raise
            return found

    async def present(self, ctx: ClusterContext, request: ActionRequest) -> bool:
        kind, name = await self._recovery_owner(ctx, request)
        scale = await self._scale(ctx, kind, str(request.target.namespace), name)
        return int(scale["spec"].get("replicas") or 0) == 0

    async def recovered_undo(self, ctx: ClusterContext, request: ActionRequest) -> dict[str, Any] | None:
        namespace = str(request.target.namespace)
        kind, name = await self._recovery_owner(ctx, request)
        owner = await self._owner_object(ctx, kind, namespace, name)
        # no mark of this action: the owner was at zero already, so execute recorded 0 (undo: nothing)
        previous = _mark(owner, request.action_id) or 0
        record = ScaleRecord(
            namespace=namespace,
            kind=kind,
            name=name,
            uid=owner["metadata"]["uid"],
            previous_replicas=previous,
        )
        return record.model_dump(mode="json")


def _mark(obj: dict[str, Any], action_id: int) -> int | None:
    """The count ``action_id`` recorded on the owner, or None (no mark, another action's, unreadable)."""
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(SCALED_BY)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("action_id") != action_id:
        return None
    previous = data.get("previous_replicas")
    return previous if isinstance(previous, int) and previous > 0 else None


ACTIONS.add(ScaleToZero.name, ScaleToZero(), __name__)

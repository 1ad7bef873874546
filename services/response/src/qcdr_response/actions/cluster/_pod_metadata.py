"""label_pod and annotate_pod: set keys in a pod's labels or annotations (merge patch) and
record the previous values, so undo puts back what was there (an absent key is removed again).

The previous values also go on the pod, in the same patch, as the annotation
``qcdr.qualys.com/undo-<action id>``: a crash after the patch and before the result was recorded
loses nothing, recovery reads them back (``recovered_undo``), and undo removes the annotation.

Undo restores only the keys that still hold the value the action set: a key someone changed
since is left as it is and reported. The quarantine label is isolate_pod's alone and is refused:
relabelling a pod must never release it from isolation (or put it in another's).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from lightkube.resources.core_v1 import Pod
from pydantic import BaseModel
from qcdr_common.contracts.actions.v1 import ActionRequest, ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import Done, InvalidRequestError
from qcdr_response.actions.cluster._context import QUARANTINE_LABEL, ClusterContext
from qcdr_response.actions.cluster._k8s import (
    ClusterAction,
    Record,
    done,
    get_pod,
    merge_patch,
    pod_ref,
    step,
)

MAX_ANNOTATIONS_BYTES = 256 * 1024  # the API server's limit on all of an object's annotations
UNDO_PREFIX = "qcdr.qualys.com/undo-"


def undo_key(action_id: int) -> str:
    return f"{UNDO_PREFIX}{action_id}"


class PodMetadataRecord(Record):
    namespace: str
    pod: str
    pod_uid: str
    field: Literal["labels", "annotations"]
    applied: dict[str, str]
    previous: dict[str, str | None]  # None: the key was absent


class PodMetadataAction(ClusterAction):
    """Shared by label_pod and annotate_pod; ``field`` says which map they write."""

    field: ClassVar[Literal["labels", "annotations"]]
    requires = ("namespace", "pod")
    reversible = True
    permissions: ClassVar[tuple[str, ...]] = ("pods:get", "pods:patch")

    def values(self, params: BaseModel) -> dict[str, str]:
        found: dict[str, str] = getattr(params, self.field)
        return found

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        what = self.field[:-1]  # "label" / "annotation"
        for key, value in self.values(params).items():
            validation.label_key(key, what)
            if key == QUARANTINE_LABEL:
                raise InvalidRequestError(f"{what}: {key!r} is set and removed by isolate_pod only")
            if key.startswith(UNDO_PREFIX):
                raise InvalidRequestError(f"{what}: {key!r} is qcdr's own undo record")
            if self.field == "labels":
                validation.label_value(value)
        if self.field == "annotations":
            size = sum(len(k) + len(v) for k, v in self.values(params).items())
            if size > MAX_ANNOTATIONS_BYTES:
                raise InvalidRequestError(f"annotations: {size} bytes, over the API server's 256 KiB")

    async def _patch(
        self,
        ctx: ClusterContext,
        request: ActionRequest,
        namespace: str,
        name: str,
        uid: str,
        values: dict[str, Any],
        undo: dict[str, str | None],
    ) -> dict[str, Any]:
        # one patch: the keys and the undo annotation land (or fail) together
        meta: dict[str, Any] = {"uid": uid, self.field: dict(values)}
        if undo:
            meta.setdefault("annotations", {}).update(undo)
        patch = {"metadata": meta}
        await merge_patch(ctx, request, Pod, "Pod", namespace, name, patch)
        return step("patch", "Pod", namespace, name, patch)

    async def execute(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        wanted = self.values(self.prepare(request, self.params))
        if ctx.quarantine_label in wanted:
            raise InvalidRequestError(f"{ctx.quarantine_label!r} is set and removed by isolate_pod only")
        namespace, name = pod_ref(request.target)
        pod = await get_pod(ctx, request.target)
        current = pod["metadata"].get(self.field) or {}
        uid = str(pod["metadata"]["uid"])
        previous = {k: current.get(k) for k in wanted}
        saved = json.dumps({"field": self.field, "previous": previous}, sort_keys=True)
        undo: dict[str, str | None] = {undo_key(request.action_id): saved}
        steps = [await self._patch(ctx, request, namespace, name, uid, dict(wanted), undo)]
        record = PodMetadataRecord(
            namespace=namespace,
            pod=name,
            pod_uid=uid,
            field=self.field,
            applied=dict(wanted),
            previous=previous,
        )
        keys = ", ".join(sorted(wanted))
        subject = f"pod {namespace}/{name}"
        return done(
            request,
            f"set {self.field} {keys} on {subject}",
            f"set {self.field} {keys} on {subject}",
            steps,
            record,
        )

    async def undo(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        record = self.record(request, PodMetadataRecord)
        if record.field != self.field:
            raise InvalidRequestError(f"{self.name}: the undo record is for {record.field}")
        target = ActionTarget(namespace=record.namespace, pod=record.pod)
        validation.target_fields(target)
        pod = await get_pod(ctx, target, uid=record.pod_uid)  # gone or replaced: TargetGoneError
        current = pod["metadata"].get(self.field) or {}
        restore = {k: record.previous.get(k) for k, v in record.applied.items() if current.get(k) == v}
        changed = sorted(set(record.applied) - set(restore))
        key = undo_key(request.action_id)
        forget: dict[str, str | None] = (
            {key: None} if key in (pod["metadata"].get("annotations") or {}) else {}
        )
        steps = []
        if restore or forget:
            steps.append(
                await self._patch(ctx, request, record.namespace, record.pod, record.pod_uid, restore, forget)
            )
        subject = (
            f"{self.field} {', '.join(sorted(restore)) or '(none)'} of pod {record.namespace}/{record.pod}"
        )
        return done(request, f"restored {subject}", f"restore {subject}", steps, changed_since=changed)

    async def present(self, ctx: ClusterContext, request: ActionRequest) -> bool:
        wanted = self.values(self.prepare(request, self.params))
        current = (await get_pod(ctx, request.target))["metadata"].get(self.field) or {}
        return all(current.get(k) == v for k, v in wanted.items())

    async def recovered_undo(self, ctx: ClusterContext, request: ActionRequest) -> dict[str, Any] | None:
        wanted = self.values(self.prepare(request, self.params))
        namespace, name = pod_ref(request.target)
        pod = await get_pod(ctx, request.target)
        saved = (pod["metadata"].get("annotations") or {}).get(undo_key(request.action_id))
        if saved is None:
            return None
        data = json.loads(saved)
        if data.get("field") != self.field:
            return None
        record = PodMetadataRecord(
            namespace=namespace,
            pod=name,
            pod_uid=str(pod["metadata"]["uid"]),
            field=self.field,
            applied=dict(wanted),
            previous={k: data["previous"].get(k) for k in wanted},
        )
        return record.model_dump(mode="json")

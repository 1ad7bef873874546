"""``block_binary``: a Tetragon policy that kills the offending binary when it is executed again,
in that workload only (a ``TracingPolicyNamespaced`` selecting the pod's workload labels).

It goes through the policy pipeline's checker (validation for the configured Tetragon version and
the blast-radius lint) before it is applied, and is refused if either objects. It is containment:
it carries a lease, and undo deletes the policy. Its objects carry
``app.kubernetes.io/managed-by: qcdr-actions``, so pruning of generated policies never removes them.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from lightkube import ApiError
from lightkube.resources.core_v1 import Pod
from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionRequest, ActionTarget
from qcdr_common.contracts.policies.v1 import PolicyDocument

from qcdr_response.actions import validation
from qcdr_response.actions.base import Action, ActionError, Done, InvalidRequestError, Scope, TargetGoneError
from qcdr_response.actions.policy._context import PolicyContext
from qcdr_response.actions.registry import ACTIONS
from qcdr_response.policies import tetragon
from qcdr_response.policies.apply import ObjectRef, apply_documents, resource_for

API_VERSION = "cilium.io/v1alpha1"
KIND = "TracingPolicyNamespaced"
MANAGED_BY = {"app.kubernetes.io/managed-by": "qcdr-actions"}
# labels that name one pod or one revision, not the workload: never part of the selector
_POD_SPECIFIC = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "statefulset.kubernetes.io/pod-name",
        "pod-template-generation",
    }
)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Pods to cover; default: the target pod's labels without per-pod ones.",
    )
    action: str = Field(default="Sigkill", pattern=r"^(Sigkill|Override|Post)$")


def policy_name(request: ActionRequest) -> str:
    digest = hashlib.sha256(f"{request.target.namespace}|{request.target.binary}".encode()).hexdigest()[:10]
    return f"qcdr-block-{request.action_id}-{digest}"


def build(request: ActionRequest, labels: dict[str, str], action: str) -> dict[str, Any]:
    binary = request.target.binary or ""
    sel = tetragon.selector(
        match_args=[tetragon.match_arg(0, "Equal", [binary])],
        action=tetragon.actions(action, arg_error=-1 if action == "Override" else None),
    )
    hook = tetragon.exec_hook([sel])
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": policy_name(request),
            "namespace": request.target.namespace,
            "labels": {**MANAGED_BY, "qcdr.qualys.com/action-id": str(request.action_id)},
            "annotations": {"qcdr.qualys.com/reason": request.reason[:250] or "response action block_binary"},
        },
        "spec": {"podSelector": {"matchLabels": dict(sorted(labels.items()))}, "kprobes": [hook]},
    }


class BlockBinary(Action[PolicyContext]):
    name: ClassVar[str] = "block_binary"
    scope: ClassVar[Scope] = Scope.POLICY
    description: ClassVar[str] = (
        "Kill the binary on its next exec in this workload (a targeted Tetragon policy)."
    )
    requires: ClassVar[tuple[str, ...]] = ("namespace", "binary")
    params: ClassVar[type[BaseModel]] = Params
    containment: ClassVar[bool] = True
    reversible: ClassVar[bool] = True
    permissions: ClassVar[tuple[str, ...]] = (
        "pods:get",
        "tracingpoliciesnamespaced.cilium.io:get,patch,delete",
    )

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        p = Params.model_validate(params.model_dump())
        if not p.match_labels and not target.pod:
            raise InvalidRequestError(
                "block_binary needs params.match_labels or a target pod to take them from"
            )
        for key, value in p.match_labels.items():
            validation.label_key(key, "match_labels")
            validation.label_value(value, "match_labels value")

    async def _labels(self, ctx: PolicyContext, request: ActionRequest, p: Params) -> dict[str, str]:
        if p.match_labels:
            return p.match_labels
        t = request.target
        try:
            pod = await ctx.client.get(Pod, t.pod or "", namespace=t.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                raise TargetGoneError(f"pod {t.namespace}/{t.pod} is gone") from None
            raise ActionError(
                f"get pod {t.namespace}/{t.pod}: {exc.status.code} {exc.status.message}"
            ) from None
        labels = {
            k: v
            for k, v in ((pod.metadata.labels if pod.metadata else None) or {}).items()
            if k not in _POD_SPECIFIC
        }
        if not labels:
            raise ActionError(f"pod {t.namespace}/{t.pod} has no workload labels to select it by")
        return labels

    async def execute(self, ctx: PolicyContext, request: ActionRequest) -> Done:
        p = Params.model_validate(request.parameters)
        body = build(request, await self._labels(ctx, request, p), p.action)
        checked = ctx.checker(body)
        if checked.errors or checked.lint:
            raise ActionError(
                "the policy was refused by the pipeline: " + "; ".join(checked.errors + checked.lint)
            )
        doc = PolicyDocument(family="response-action", filename=f"{body['metadata']['name']}.yaml", body=body)
        report = await apply_documents(
            [doc], ctx.client, field_manager=ctx.field_manager, prune=False, dry_run=request.dry_run
        )
        if report.failed:
            raise ActionError(f"apply {report.failed[0]}")
        ref = {"namespace": request.target.namespace, "name": body["metadata"]["name"]}
        details = {"policy": body, "content_hash": doc.content_hash}
        if request.dry_run:
            return Done(
                ActionOutcome.DRY_RUN, f"would apply {KIND} {ref['namespace']}/{ref['name']}", details
            )
        return Done(
            ActionOutcome.SUCCEEDED, f"applied {KIND} {ref['namespace']}/{ref['name']}", details, undo=ref
        )

    async def present(self, ctx: PolicyContext, request: ActionRequest) -> bool:
        res = resource_for(API_VERSION, KIND)
        try:
            await ctx.client.get(res, policy_name(request), namespace=request.target.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise ActionError(f"get {KIND}: {exc.status.code} {exc.status.message}") from None
        return True

    async def recovered_undo(self, ctx: PolicyContext, request: ActionRequest) -> dict[str, Any] | None:
        # the policy's name comes from the request alone
        return {"namespace": request.target.namespace, "name": policy_name(request)}

    async def undo(self, ctx: PolicyContext, request: ActionRequest) -> Done:
        ref = request.undo or {}
        name, namespace = str(ref.get("name", "")), str(ref.get("namespace", ""))
        if not name.startswith("qcdr-block-"):
            raise ActionError("the undo record does not name a block policy")
        res = resource_for(API_VERSION, KIND)
        try:
            await ctx.client.delete(res, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise ActionError(
                    f"delete {KIND} {namespace}/{name}: {exc.status.code} {exc.status.message}"
                ) from None
        obj = ObjectRef(API_VERSION, KIND, namespace, name)
        return Done(ActionOutcome.SUCCEEDED, f"deleted {obj}")


ACTIONS.add(BlockBinary.name, BlockBinary())

"""isolate_pod: cut a pod off the network while kubelet probes keep it alive for forensics.

Two policies select the quarantine label value unique to the action (``qcdr-<action id>``):

- a CiliumNetworkPolicy that allows only the ``host`` entity and *denies* everything else with
  ``ingressDeny``/``egressDeny`` (deny wins over any other policy's allow): ``world``, every
  endpoint in every namespace, the other nodes (``remote-node``), ``kube-apiserver``, Cilium's
  ``ingress``, ``health``, ``init`` and ``unmanaged`` entities. Not ``cluster`` or ``all``: both
  include ``host``, and a deny on them would also cut the probes;
- a NetworkPolicy (policyTypes Ingress and Egress, no rules) for clusters without Cilium. It is
  additive, so weaker: another NetworkPolicy that allows traffic to the pod still lets it in.

Policies first, then the label, so the pod is never labelled without its policy. A Cilium CRD
that is not installed is recorded in ``details`` and the NetworkPolicy carries on alone.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from lightkube import ApiError
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType
from qcdr_common.contracts.actions.v1 import ActionRequest, ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import ActionError, Done, InvalidRequestError, NoParams, TargetGoneError
from qcdr_response.actions.cluster._context import ClusterContext
from qcdr_response.actions.cluster._isolation import (
    CNP_API,
    CNP_KIND,
    NP_API,
    NP_KIND,
    IsolateRecord,
    PolicyRef,
    cilium_policy,
    network_policy,
    policy_name,
    quarantine_value,
)
from qcdr_response.actions.cluster._k8s import (
    ClusterAction,
    api_error,
    done,
    get_pod,
    is_not_found,
    kind_missing,
    merge_patch,
    pod_ref,
    step,
)
from qcdr_response.actions.registry import ACTIONS
from qcdr_response.policies.apply import resource_for


def _resource(api_version: str, kind: str) -> Any:
    return resource_for(api_version, kind)


class IsolatePod(ClusterAction):
    name = "isolate_pod"
    description = (
        "Deny all of a pod's traffic but the local host's (CiliumNetworkPolicy deny rules, plus an "
        "additive NetworkPolicy for other CNIs), then label the pod so both select it."
    )
    requires = ("namespace", "pod")
    params = NoParams
    containment = True
    reversible = True
    permissions: ClassVar[tuple[str, ...]] = (
        "pods:get",
        "pods:patch",
        "ciliumnetworkpolicies.cilium.io:create",
        "ciliumnetworkpolicies.cilium.io:get",
        "ciliumnetworkpolicies.cilium.io:delete",
        "networkpolicies.networking.k8s.io:create",
        "networkpolicies.networking.k8s.io:get",
        "networkpolicies.networking.k8s.io:delete",
    )

    async def execute(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        self.prepare(request, NoParams)
        namespace, pod_name = pod_ref(request.target)
        uid = str((await get_pod(ctx, request.target))["metadata"]["uid"])
        label, value = ctx.quarantine_label, quarantine_value(request.action_id)
        steps: list[dict[str, Any]] = []
        created: list[PolicyRef] = []
        notes: dict[str, Any] = {}
        for body in (cilium_policy(request, namespace, label), network_policy(request, namespace, label)):
            ref = PolicyRef(api_version=body["apiVersion"], kind=body["kind"], name=body["metadata"]["name"])
            steps.append(step("create", ref.kind, namespace, ref.name, body))
            try:
                res = _resource(ref.api_version, ref.kind)
                await ctx.client.create(
                    res.from_dict(body), field_manager=ctx.field_manager, dry_run=request.dry_run
                )
            except ApiError as exc:
                if ref.kind == CNP_KIND and kind_missing(exc):
                    notes["cilium"] = (
                        "CiliumNetworkPolicy is not served (Cilium not installed): only the "
                        "NetworkPolicy isolates the pod, and it is additive (weaker)"
                    )
                    continue
                if exc.status.code != 409:  # 409: this action's own policy, from an earlier attempt
                    await self._cleanup(ctx, namespace, created, request.dry_run)
                    raise api_error("create", ref.kind, namespace, ref.name, exc) from None
            created.append(ref)
        patch = {"metadata": {"uid": uid, "labels": {label: value}}}
        steps.append(step("patch", "Pod", namespace, pod_name, patch))
        try:
            await merge_patch(ctx, request, Pod, "Pod", namespace, pod_name, patch)
        except ActionError:  # the pod went (TargetGoneError) or refused: no policy left behind
            await self._cleanup(ctx, namespace, created, request.dry_run)
            raise
        record = IsolateRecord(
            namespace=namespace,
            pod=pod_name,
            pod_uid=uid,
            label_key=label,
            label_value=value,
            policies=created,
        )
        kinds = " and ".join(p.kind for p in created)
        return done(
            request,
            f"isolated pod {namespace}/{pod_name} ({kinds} {policy_name(request.action_id)})",
            f"isolate pod {namespace}/{pod_name} ({kinds} {policy_name(request.action_id)})",
            steps,
            record,
            **notes,
        )

    async def _cleanup(
        self, ctx: ClusterContext, namespace: str, refs: list[PolicyRef], dry_run: bool
    ) -> None:
        """Best effort: remove the policies of a run that could not label the pod."""
        for ref in [] if dry_run else refs:
            with contextlib.suppress(ApiError):
                await ctx.client.delete(_resource(ref.api_version, ref.kind), ref.name, namespace=namespace)

    async def undo(self, ctx: ClusterContext, request: ActionRequest) -> Done:
        record = self.record(request, IsolateRecord)
        validation.dns1123_label(record.namespace, "namespace")
        validation.dns1123_subdomain(record.pod, "pod")
        validation.label_key(record.label_key)
        steps: list[dict[str, Any]] = []
        gone: list[str] = []
        # the label first: a policy left without a labelled pod selects nothing
        target = ActionTarget(namespace=record.namespace, pod=record.pod)
        try:
            pod = await get_pod(ctx, target, uid=record.pod_uid)
        except TargetGoneError:
            gone.append(f"Pod {record.namespace}/{record.pod}")
        else:
            labels = pod["metadata"].get("labels") or {}
            if labels.get(record.label_key) == record.label_value:
                patch = {"metadata": {"uid": record.pod_uid, "labels": {record.label_key: None}}}
                steps.append(step("patch", "Pod", record.namespace, record.pod, patch))
                try:
                    await ctx.client.patch(
                        Pod,
                        record.pod,
                        patch,
                        namespace=record.namespace,
                        patch_type=PatchType.MERGE,
                        field_manager=ctx.field_manager,
                        dry_run=request.dry_run,
                    )
                except ApiError as exc:
                    if not is_not_found(exc):
                        raise api_error("patch", "pod", record.namespace, record.pod, exc) from None
                    gone.append(f"Pod {record.namespace}/{record.pod}")
        for ref in record.policies:
            validation.dns1123_subdomain(ref.name, "policy name")
            if (ref.api_version, ref.kind) not in ((CNP_API, CNP_KIND), (NP_API, NP_KIND)):
                raise InvalidRequestError(f"{self.name}: undo record names {ref.kind} {ref.api_version}")
            steps.append(step("delete", ref.kind, record.namespace, ref.name))
            try:
                await ctx.client.delete(
                    _resource(ref.api_version, ref.kind),
                    ref.name,
                    namespace=record.namespace,
                    dry_run=request.dry_run,
                )
            except ApiError as exc:
                if not is_not_found(exc):
                    raise api_error("delete", ref.kind, record.namespace, ref.name, exc) from None
                gone.append(f"{ref.kind} {record.namespace}/{ref.name}")
        subject = f"pod {record.namespace}/{record.pod}"
        return done(request, f"released {subject}", f"release {subject}", steps, already_gone=gone)

    async def present(self, ctx: ClusterContext, request: ActionRequest) -> bool:
        namespace, _ = pod_ref(request.target)
        pod = await get_pod(ctx, request.target)
        labels = pod["metadata"].get("labels") or {}
        if labels.get(ctx.quarantine_label) != quarantine_value(request.action_id):
            return False
        for api_version, kind in ((CNP_API, CNP_KIND), (NP_API, NP_KIND)):
            try:
                await ctx.client.get(
                    _resource(api_version, kind), policy_name(request.action_id), namespace=namespace
                )
            except ApiError as exc:
                if kind == CNP_KIND and kind_missing(exc):
                    continue  # Cilium is not installed: the NetworkPolicy is the whole effect
                if is_not_found(exc):
                    return False
                raise api_error("get", kind, namespace, policy_name(request.action_id), exc) from None
        return True

    async def recovered_undo(self, ctx: ClusterContext, request: ActionRequest) -> dict[str, Any] | None:
        # Everything execute records is named after the action id: the pod's UID and which of
        # the two policies exist (no CiliumNetworkPolicy where Cilium is not installed) are read.
        namespace, pod_name = pod_ref(request.target)
        uid = str((await get_pod(ctx, request.target))["metadata"]["uid"])
        name = policy_name(request.action_id)
        policies = []
        for api_version, kind in ((CNP_API, CNP_KIND), (NP_API, NP_KIND)):
            try:
                await ctx.client.get(_resource(api_version, kind), name, namespace=namespace)
            except ApiError as exc:
                if not (is_not_found(exc) or kind_missing(exc)):
                    raise api_error("get", kind, namespace, name, exc) from None
                continue
            policies.append(PolicyRef(api_version=api_version, kind=kind, name=name))
        record = IsolateRecord(
            namespace=namespace,
            pod=pod_name,
            pod_uid=uid,
            label_key=ctx.quarantine_label,
            label_value=quarantine_value(request.action_id),
            policies=policies,
        )
        return record.model_dump(mode="json")


ACTIONS.add(IsolatePod.name, IsolatePod(), __name__)

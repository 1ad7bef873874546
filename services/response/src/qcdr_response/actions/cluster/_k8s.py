"""What the cluster actions share: the base class, one wording of API errors, the pod a target
names (refused when gone or replaced), and how a result reports its requests.

Every write goes out with the context's field manager and, in dry-run, with ``dryRun=All``, so the
API server checks the very requests a real run would send and changes nothing. Only
``ApiError`` is turned into ``ActionError``; a transport error propagates, so the dispatcher can
retry it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from lightkube import ApiError
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType
from pydantic import BaseModel, ConfigDict
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionRequest, ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import (
    Action,
    ActionError,
    Done,
    InvalidRequestError,
    Scope,
    TargetGoneError,
)
from qcdr_response.actions.cluster._context import ClusterContext

T = TypeVar("T")
P = TypeVar("P", bound=BaseModel)

# what an API server answers for a kind it does not serve (a CRD that is not installed)
NO_SUCH_RESOURCE = "the server could not find the requested resource"


class Record(BaseModel):
    """An undo record: what ``execute`` hands back for ``undo`` (validated again when it returns)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterAction(Action[ClusterContext]):
    scope = Scope.CLUSTER

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        validation.target_fields(target)

    def prepare(self, request: ActionRequest, model: type[P]) -> P:
        """Parse and check the request before any API call; the typed parameters."""
        params = self.parse_params(request.parameters)
        self.check(request.target, params)
        if not isinstance(params, model):  # pragma: no cover - ``params`` declares the model
            raise TypeError(f"{self.name}: parameters are {type(params).__name__}, not {model.__name__}")
        return params

    def record(self, request: ActionRequest, model: type[P]) -> P:
        """The undo record of an undo request, validated."""
        if not request.undo:
            raise InvalidRequestError(f"{self.name}: undo needs the undo record of the execution")
        try:
            return model.model_validate(request.undo)
        except ValueError as exc:
            raise InvalidRequestError(f"{self.name}: invalid undo record: {exc}") from None


def where(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def status_of(exc: ApiError) -> tuple[int, str]:
    return int(exc.status.code or 0), str(exc.status.message or exc)


def api_error(
    verb: str, kind: str, namespace: str | None, name: str, exc: ApiError, *, target: bool = False
) -> ActionError:
    """``<verb> <kind> <ns>/<name>: <code> <message>``; a 404 on the target (or its replacement:
    a failed UID precondition) is ``TargetGoneError``."""
    code, message = status_of(exc)
    causes = exc.status.details.causes if exc.status.details else None
    extra = "; ".join(c.message for c in causes or [] if c.message and c.message not in message)
    reason = f"{verb} {where(kind, namespace, name)}: {code} {message}" + (f" ({extra})" if extra else "")
    if target and (code == 404 or (code == 409 and "Precondition failed: UID" in message)):
        return TargetGoneError(reason)
    return ActionError(reason)


async def call(
    awaitable: Awaitable[T], verb: str, kind: str, namespace: str | None, name: str, *, target: bool = False
) -> T:
    try:
        return await awaitable
    except ApiError as exc:
        raise api_error(verb, kind, namespace, name, exc, target=target) from None


async def merge_patch(
    ctx: ClusterContext,
    request: ActionRequest,
    resource: Any,
    kind: str,
    namespace: str | None,
    name: str,
    patch: dict[str, Any],
) -> dict[str, Any]:
    """One merge patch of the target as the action's field manager (``dryRun=All`` when the
    request is a dry run); the object after it. A 404 or a failed UID precondition is
    ``TargetGoneError``."""
    result = await call(
        ctx.client.patch(
            resource,
            name,
            patch,
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager=ctx.field_manager,
            dry_run=request.dry_run,
        ),
        "patch",
        kind.lower(),
        namespace,
        name,
        target=True,
    )
    return as_dict(result)


def is_not_found(exc: ApiError) -> bool:
    return status_of(exc)[0] == 404


def kind_missing(exc: ApiError) -> bool:
    code, message = status_of(exc)
    return code == 404 and message == NO_SUCH_RESOURCE


def as_dict(obj: Any) -> dict[str, Any]:
    return dict(obj) if isinstance(obj, dict) else dict(obj.to_dict())


def pod_ref(target: ActionTarget) -> tuple[str, str]:
    if not target.namespace or not target.pod:
        raise InvalidRequestError("the target needs namespace and pod")
    return target.namespace, target.pod


async def get_pod(ctx: ClusterContext, target: ActionTarget, *, uid: str | None = None) -> dict[str, Any]:
    """The pod the target names; ``TargetGoneError`` when it is gone or its UID is not
    ``uid`` (default: ``target.pod_uid``), i.e. a look-alike with the same name."""
    namespace, name = pod_ref(target)
    pod = as_dict(
        await call(ctx.client.get(Pod, name, namespace=namespace), "get", "pod", namespace, name, target=True)
    )
    wanted = uid or target.pod_uid
    actual = pod.get("metadata", {}).get("uid")
    if wanted and actual != wanted:
        raise TargetGoneError(f"pod {namespace}/{name} was replaced: UID {actual}, expected {wanted}")
    return pod


async def pod_gone_or_going(ctx: ClusterContext, target: ActionTarget) -> bool:
    """For delete and evict: the pod is gone, replaced (UID changed) or terminating."""
    try:
        pod = await get_pod(ctx, target)
    except TargetGoneError:
        return True
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def step(verb: str, kind: str, namespace: str | None, name: str, body: Any = None) -> dict[str, Any]:
    """One request, as results report it."""
    out: dict[str, Any] = {"verb": verb, "kind": kind, "namespace": namespace, "name": name}
    if body is not None:
        out["body"] = body
    return out


def done(
    request: ActionRequest,
    did: str,
    would: str,
    steps: list[dict[str, Any]],
    undo: Record | None = None,
    **details: Any,
) -> Done:
    """The result: in dry-run ``DRY_RUN`` with the requests the server accepted, no undo record
    (nothing changed; ``details["undo"]`` says what it would have been)."""
    record = undo.model_dump(mode="json") if undo is not None else None
    info: dict[str, Any] = {"requests": steps, **details}
    if request.dry_run:
        if record is not None:
            info["undo"] = record
        return Done(ActionOutcome.DRY_RUN, f"dry run, nothing changed: would {would}", info)
    return Done(ActionOutcome.SUCCEEDED, did, info, record)

"""What every action is: a name, where it runs, what it needs, and how to do, check and undo it.

An action object is stateless; the executor hands it a context (the Kubernetes client for
cluster actions, the Docker client and host paths for node actions) and the request. The
dispatcher around it (service, executor, node agent) owns approvals, leases, rate limits,
protected targets, the audit trail and metrics; an action only acts and reports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome, ActionRequest, ActionTarget
from qcdr_common.logging import get_logger

C = TypeVar("C")
log = get_logger(__name__)


class Scope(StrEnum):
    CLUSTER = "cluster"  # through the Kubernetes API, run by the response service
    NODE = "node"  # on the target's node, run by the node agent
    POLICY = "policy"  # a generated policy through the policy pipeline, run by the response service


class ActionError(Exception):
    """The action could not be done; ``reason`` is one line for the audit trail and the API."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TargetGoneError(ActionError):
    """The target no longer exists or is no longer the one named (pod UID or PID start time
    changed): the action is recorded as skipped, never retried on a look-alike."""


class InvalidRequestError(ActionError):
    """Target fields or parameters failed validation (a caller error: HTTP 422, never retried)."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Done:
    """What an action did (or, in dry-run, would do)."""

    outcome: ActionOutcome
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    # containment and reversible actions: what ``undo`` needs (object names, previous values, ...)
    undo: dict[str, Any] | None = None


class Action(ABC, Generic[C]):
    """One action. Subclasses set the class attributes and implement ``execute`` (and ``undo`` and
    ``present`` where they apply); ``ACTIONS.add`` registers an instance under ``name``."""

    name: ClassVar[str]
    scope: ClassVar[Scope]
    description: ClassVar[str]
    # target fields that must be set (Talon-style required fields), checked before anything runs
    requires: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[type[BaseModel]] = NoParams
    # containment (isolate, pause, block) carries a lease: it is undone when the lease expires
    containment: ClassVar[bool] = False
    # whether ``undo`` exists (containment actions and reversible ones such as label or cordon)
    reversible: ClassVar[bool] = False
    # the Kubernetes RBAC (``resource:verb``) or host privileges it needs, for docs and `action list`
    permissions: ClassVar[tuple[str, ...]] = ()

    def parse_params(self, raw: dict[str, Any]) -> BaseModel:
        try:
            return self.params.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "parameters"
            raise InvalidRequestError(f"{self.name}: parameter {where}: {first['msg']}") from None

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        """Validate the target before anything runs; raise ``InvalidRequestError``. The default
        checks ``requires``; actions add their own checks (and call this one)."""
        missing = [f for f in self.requires if getattr(target, f) in (None, "")]
        if missing:
            raise InvalidRequestError(f"{self.name} needs target field(s): {', '.join(missing)}")

    async def present(self, ctx: C, request: ActionRequest) -> bool:
        """Recovery: is the effect of ``request`` already in place? Called when an intent was
        recorded but no result (a crash in between); raises ``TargetGoneError`` when the target
        is gone. The default says no, so the action simply runs again (fine for idempotent ones)."""
        return False

    async def recovered_undo(self, ctx: C, request: ActionRequest) -> dict[str, Any] | None:
        """Recovery, once ``present`` said yes: the undo record ``execute`` would have returned.

        Reversible actions must rebuild it from what is in place (the tests check every one
        does): without it a recovered action could never be undone, nor a contained target
        released when its lease ends. ``None`` when the record cannot be rebuilt."""
        return None

    @abstractmethod
    async def execute(self, ctx: C, request: ActionRequest) -> Done:
        """Do it (or, with ``request.dry_run``, check everything and say what would be done)."""

    async def undo(self, ctx: C, request: ActionRequest) -> Done:
        """Reverse ``execute`` from ``request.undo``; only for ``reversible`` actions."""
        raise ActionError(f"{self.name} cannot be undone")


async def rebuild_undo(action: Action[C], ctx: C, request: ActionRequest) -> dict[str, Any] | None:
    """``recovered_undo`` for an execution recovery finds in place; a failure to rebuild the record
    leaves it out (the effect stands and is reported, only undo is then unavailable)."""
    if not action.reversible or request.op is not ActionOp.EXECUTE:
        return None
    try:
        return await action.recovered_undo(ctx, request)
    except Exception as exc:
        log.warning(
            "recovery: no undo record", action=action.name, action_id=request.action_id, error=repr(exc)
        )
        return None

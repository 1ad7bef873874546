"""``ActionRequest`` / ``ActionResult`` v1: one response action sent to an executor, and its outcome.

The response service records every action in its database; a request travels (through the
outbox) to the executor that can carry it out: the response service itself for cluster and policy
actions (stream ``response:actions``), the node agent of the target's node for node actions
(stream ``response:node-actions:<node>``). Results of node actions come back on
``response:action-results``. ``action_id`` + ``op`` + ``attempt`` identify a request, so a
redelivered request is recognised and a result is recorded once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

VERSION = 1

ACTION_REQUESTED = "response.action_requested"
ACTION_COMPLETED = "response.action_completed"
# Checked again by the executor: a name an executor does not know is refused, never guessed.
ACTION_NAME_PATTERN = r"^[a-z][a-z0-9_]{1,48}$"


class ActionOp(StrEnum):
    EXECUTE = "execute"
    UNDO = "undo"


class ActionOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # the target is gone or no longer the one the finding named (pod UID, PID start time changed)
    SKIPPED = "skipped"
    # dry-run: everything was checked and nothing was changed; ``details`` says what would be done
    DRY_RUN = "dry_run"
    # recovery after a crash between intent and result: the effect was already in place
    RECOVERED = "recovered"


class ActionTarget(BaseModel):
    """What to act on. Which fields an action needs is declared by the action (``requires``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: str | None = Field(default=None, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)
    pod: str | None = Field(default=None, max_length=253)
    pod_uid: str | None = Field(default=None, max_length=64)
    node: str | None = Field(default=None, max_length=253)
    owner_kind: str | None = Field(default=None, max_length=63)
    owner_name: str | None = Field(default=None, max_length=253)
    container: str | None = Field(default=None, max_length=63, description="The container's name in the pod.")
    container_id: str | None = Field(default=None, max_length=64)
    # host PID namespace (Tetragon reports host PIDs) and the process start time, to refuse a
    # reused PID: ticks since boot (/proc/<pid>/stat field 22) when known, else a wall time.
    # Bounded (Linux's PID_MAX_LIMIT; a signed 64-bit tick count) so that no integer reaches the
    # action row's JSONB that its encoder refuses (an unbounded one was an HTTP 500).
    pid: int | None = Field(default=None, ge=1, le=4_194_304)
    pid_start_ticks: int | None = Field(default=None, ge=0, le=2**63 - 1)
    pid_start_time: AwareDatetime | None = None
    # a path inside the container's filesystem (absolute, as the container sees it)
    path: str | None = Field(default=None, max_length=4096)
    binary: str | None = Field(default=None, max_length=4096)
    image_digest: str | None = Field(default=None, max_length=200)

    def describe(self) -> str:
        """One line naming the target, for logs and the audit trail."""
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_none=True, mode="json").items()]
        return " ".join(parts) or "(no target)"


class ActionRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action_id: int = Field(ge=1)
    op: ActionOp = ActionOp.EXECUTE
    action: str = Field(pattern=ACTION_NAME_PATTERN)
    target: ActionTarget
    parameters: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = True
    reason: str = Field(default="", max_length=2000)
    finding_id: str | None = None
    # for ``undo``: what ``execute`` recorded it needs to reverse itself
    undo: dict[str, Any] | None = None
    attempt: int = Field(default=1, ge=1)
    requested_at: AwareDatetime


class ActionResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action_id: int = Field(ge=1)
    op: ActionOp
    action: str = Field(pattern=ACTION_NAME_PATTERN)
    attempt: int = Field(default=1, ge=1)
    outcome: ActionOutcome
    message: str = Field(default="", max_length=4000)
    details: dict[str, Any] = Field(default_factory=dict)
    undo: dict[str, Any] | None = None
    executor: str = Field(min_length=1, max_length=253, description="'response' or the node agent's node.")
    finished_at: AwareDatetime

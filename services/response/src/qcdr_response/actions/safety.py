"""What is never acted on, and how often anything may be: checked when an action is about to be
queued, so a refused action is recorded as skipped with the reason and nothing is sent."""

from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta

from qcdr_common.contracts.actions.v1 import ActionTarget
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionRow, ActionState

# States in which an action has acted (or is about to): what the rate limits count
_ACTING = (
    ActionState.QUEUED.value,
    ActionState.RUNNING.value,
    ActionState.SUCCEEDED.value,
    ActionState.FAILED.value,
    ActionState.RELEASING.value,
    ActionState.RELEASED.value,
    ActionState.UNDO_FAILED.value,
)
WINDOW = timedelta(hours=1)


def protection(target: ActionTarget, ctx: ActionsContext) -> str | None:
    """Why ``target`` may not be touched, or None. Namespaces and 'namespace/name' workload
    patterns are matched with fnmatch (case-sensitive, as Kubernetes names are)."""
    ns = target.namespace
    if ns is not None and any(fnmatch.fnmatchcase(ns, p) for p in ctx.protected_namespaces):
        return f"namespace {ns!r} is protected"
    names = [n for n in (target.pod, target.owner_name) if n]
    for pattern in ctx.protected_workloads:
        for name in names:
            if fnmatch.fnmatchcase(f"{ns or ''}/{name}", pattern):
                return f"workload {ns}/{name} is protected ({pattern})"
    return None


def workload_key(target: ActionTarget) -> str | None:
    name = target.owner_name or target.pod
    if target.namespace is None or name is None:
        return target.node  # node-level actions are limited per node
    return f"{target.namespace}/{name}"


async def rate_limited(
    session: AsyncSession, row: ActionRow, target: ActionTarget, ctx: ActionsContext, now: datetime
) -> str | None:
    """Why this action would exceed a limit, or None. Dry runs are never limited (they change
    nothing). One transaction at a time per action type checks and queues (advisory lock), so two
    workers cannot both take the last slot."""
    if row.dry_run:
        return None
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"qcdr-action-rate:{row.action}"}
    )
    since = now - WINDOW
    recent = (
        select(func.count())
        .select_from(ActionRow)
        .where(ActionRow.state.in_(_ACTING), ActionRow.dry_run.is_(False), ActionRow.started_at >= since)
        .where(ActionRow.id != row.id)
    )
    n_action = await session.scalar(recent.where(ActionRow.action == row.action)) or 0
    if n_action >= ctx.action_rate_per_hour:
        return (
            f"rate limit: {n_action} {row.action} actions in the last hour (limit {ctx.action_rate_per_hour})"
        )
    key = workload_key(target)
    if key is not None:
        ns, _, name = key.partition("/")
        same = recent
        if name:
            same = same.where(
                ActionRow.target["namespace"].astext == ns,
                func.coalesce(ActionRow.target["owner_name"].astext, ActionRow.target["pod"].astext) == name,
            )
        else:
            same = same.where(ActionRow.target["node"].astext == key)
        n_workload = await session.scalar(same) or 0
        if n_workload >= ctx.workload_rate_per_hour:
            limit = ctx.workload_rate_per_hour
            return f"rate limit: {n_workload} actions on {key} in the last hour (limit {limit})"
    return None

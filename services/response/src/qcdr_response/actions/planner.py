"""Findings in, playbook runs out: called in the transaction that stores a batch of findings, so
a run exists exactly when its finding was recorded (a redelivered finding starts nothing)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from pydantic import ValidationError
from qcdr_common.contracts.actions.v1 import ActionTarget
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.logging import get_logger
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.actions import service, validation
from qcdr_response.actions.base import InvalidRequestError
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionRow
from qcdr_response.actions.playbook import Playbook, matching

log = get_logger(__name__)

SUPPRESSED = Counter(
    "qcdr_playbook_runs_suppressed_total",
    "Playbook runs not started because the workload had one within the playbook's cooldown.",
    ["playbook"],
)
TOO_OLD = Counter(
    "qcdr_playbook_findings_too_old_total",
    "Findings a playbook matched but started no run for: their event time was older than its max_age.",
    ["playbook"],
)


def target_of(finding: Finding) -> ActionTarget:
    """What a finding names: its workload, process and (from attributes the sources carry) node,
    pod UID, and process start time. Malformed values are dropped, not guessed: an action that
    needs them then refuses with a clear reason."""
    return _target_and_dropped(finding)[0]


def _target_and_dropped(finding: Finding) -> tuple[ActionTarget, str]:
    """``target_of`` and, when values were dropped, which and why (one line, for the skip reason:
    a Finding bounds neither names nor numbers the way an ActionTarget does)."""
    w, p, attrs = finding.workload, finding.process, finding.attributes
    container_id = None
    if w.container_id:
        try:
            container_id = validation.container_id(w.container_id)
        except InvalidRequestError:
            container_id = None
    values = {
        "cluster": w.cluster,
        "namespace": w.namespace,
        "pod": w.pod,
        "owner_kind": w.owner_kind,
        "owner_name": w.owner_name,
        "container": w.container,
        "container_id": container_id,
        "image_digest": w.image_digest,
        "pid": p.pid if p is not None and p.pid and p.pid > 2 else None,
        "path": p.path if p is not None else None,
        "binary": p.path if p is not None else None,
        "node": attrs.get("node") if isinstance(attrs.get("node"), str) else None,
        "pod_uid": attrs.get("pod_uid") if isinstance(attrs.get("pod_uid"), str) else None,
        "pid_start_time": attrs.get("process_start_time"),
    }
    fields = {k: v for k, v in values.items() if v is not None}
    dropped: list[str] = []
    while True:
        try:
            return ActionTarget.model_validate(fields), "; ".join(dropped)
        except ValidationError as exc:
            bad = {
                str(e["loc"][0]): e["msg"] for e in exc.errors() if e["loc"] and str(e["loc"][0]) in fields
            }
            if not bad:  # cannot happen (every field is checked alone); never guess
                return ActionTarget(), "the finding names no usable target"
            dropped += [f"{k}: {msg}" for k, msg in sorted(bad.items())]
            fields = {k: v for k, v in fields.items() if k not in bad}


async def plan(
    session: AsyncSession, ctx: ActionsContext, findings: Iterable[Finding], playbooks: Iterable[Playbook]
) -> list[ActionRow]:
    """Start a run per (finding, matching playbook); steps that cannot work on this finding are
    recorded as skipped with the reason (``start_run(lenient=True)``)."""
    started: list[ActionRow] = []
    books = list(playbooks)
    now = datetime.now(UTC)
    planned = []
    for finding in findings:
        for pb in matching(books, finding):
            if pb.max_age is not None and (now - finding.event_time).total_seconds() > pb.max_age:
                TOO_OLD.labels(pb.name).inc()
                log.info(
                    "finding older than the playbook's max_age",
                    playbook=pb.name,
                    finding_id=finding.id,
                    event_time=finding.event_time.isoformat(),
                )
                continue
            target, dropped = _target_and_dropped(finding)
            if dropped:
                log.info(
                    "finding values left out of the action target", finding_id=finding.id, dropped=dropped
                )
            planned.append((finding, pb, target, dropped))
    await _lock_cooldowns(session, [(pb, target) for _, pb, target, _ in planned if pb.cooldown is not None])
    for finding, pb, target, dropped in planned:
        if pb.cooldown is not None and await _cooling_down(session, pb, target):
            SUPPRESSED.labels(pb.name).inc()
            log.info(
                "playbook in cooldown",
                playbook=pb.name,
                finding_id=finding.id,
                workload=_workload(target),
            )
            continue
        steps = [
            service.StepRequest(
                action=s.action,
                target=target,
                parameters=s.params,
                require_approval=s.require_approval,
                lease_seconds=s.lease,
                continue_on_error=s.continue_on_error,
                dry_run=s.dry_run,
                dropped=dropped,
            )
            for s in pb.actions
        ]
        rows = await service.start_run(
            session,
            ctx,
            run_id=f"{pb.name}:{finding.id}",
            steps=steps,
            requested_by=f"playbook:{pb.name}",
            reason=finding.title or finding.category,
            playbook=pb.name,
            finding_id=finding.id,
            lenient=True,
        )
        started.extend(rows)
    return started


def _workload(target: ActionTarget) -> dict[str, str]:
    """What a cooldown counts runs by: the owner when known (every replica is one workload), else
    the pod; with the cluster and namespace."""
    key = {"cluster": target.cluster, "namespace": target.namespace}
    if target.owner_kind and target.owner_name:
        key |= {"owner_kind": target.owner_kind, "owner_name": target.owner_name}
    else:
        key["pod"] = target.pod
    return {k: v for k, v in key.items() if v is not None}


async def _lock_cooldowns(session: AsyncSession, keyed: list[tuple[Playbook, ActionTarget]]) -> None:
    """Serialize cooldown checks per (playbook, workload) across replicas, until commit.

    Without it, two replicas' batches about one Deployment would both find no run yet (neither
    has committed) and both start one. Taken in sorted order, all before the first check, so
    two batches never wait for each other's locks in a circle.
    """
    keys = sorted({f"{pb.name}|{sorted(_workload(target).items())}" for pb, target in keyed})
    for key in keys:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('qcdr-playbook-cooldown'), hashtext(:key))"),
            {"key": key},
        )


async def _cooling_down(session: AsyncSession, pb: Playbook, target: ActionTarget) -> bool:
    """A run of ``pb`` for the same workload started within its cooldown (runs of this batch,
    in this transaction, included)."""
    assert pb.cooldown is not None
    since = func.now() - timedelta(seconds=pb.cooldown)
    found = await session.scalar(
        select(ActionRow.id)
        .where(
            ActionRow.playbook == pb.name,
            ActionRow.step == 1,  # one row per run: its first step
            ActionRow.created_at > since,
            ActionRow.target.contains(_workload(target)),
        )
        .limit(1)
    )
    return found is not None

"""Apply statuses spokes report (``POST /federation/v1/status`` and every heartbeat): one row per
(policy, cluster), the newest report winning, and ``qualys_federation_syncs_total`` counted once
per (policy, cluster, generation). Flushes, never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from qcdr_common.contracts.federation.v1 import PolicyApplyState, PolicyApplyStatus
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.hub.policies import repository as repo
from qcdr_federation.hub.policies.metrics import SYNCS
from qcdr_federation.hub.policies.models import PolicyStatusRow

log = get_logger("qcdr.federation.policies")

# states that end a sync, and the outcome qualys_federation_syncs_total counts them as
_OUTCOMES: Mapping[PolicyApplyState, str] = {
    PolicyApplyState.PROPOSED: "succeeded",
    PolicyApplyState.APPROVED: "succeeded",
    PolicyApplyState.APPLIED: "succeeded",
    PolicyApplyState.FAILED: "failed",
}


def _newest(statuses: Sequence[PolicyApplyStatus]) -> dict[str, PolicyApplyStatus]:
    newest: dict[str, PolicyApplyStatus] = {}
    for status in statuses:
        seen = newest.get(status.policy_id)
        if seen is None or (status.generation, status.observed_at) >= (seen.generation, seen.observed_at):
            newest[status.policy_id] = status
    return newest


def _counts(status: PolicyApplyStatus, current_generation: int, synced: int | None) -> str | None:
    """The outcome to count for this report, once per (policy, cluster, generation)."""
    outcome = _OUTCOMES.get(status.state)
    if outcome is None or status.generation != current_generation or synced == status.generation:
        return None
    return outcome


class _Stored(Protocol):
    """A stored status: the ORM row, or its read-only view."""

    @property
    def generation(self) -> int: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def message(self) -> str | None: ...
    @property
    def observed_at(self) -> datetime: ...
    @property
    def synced_generation(self) -> int | None: ...


def _decide(stored: _Stored, status: PolicyApplyStatus, current_generation: int) -> tuple[bool, str | None]:
    """(whether the row's fields change, the outcome to count) for a report against a stored row."""
    if (status.generation, status.observed_at) < (stored.generation, stored.observed_at):
        return False, None  # an older report arriving late (a retried POST, a heartbeat overtaken)
    changed = (status.generation, status.content_hash, status.state.value, status.message) != (
        stored.generation,
        stored.content_hash,
        stored.state,
        stored.message,
    )
    return changed, _counts(status, current_generation, stored.synced_generation)


def _apply(
    row: PolicyStatusRow, status: PolicyApplyStatus, current_generation: int, now: datetime
) -> str | None:
    """Update ``row`` from ``status`` (see :func:`_decide`); the outcome counted, if any."""
    changed, outcome = _decide(row, status, current_generation)
    if changed:
        row.generation = status.generation
        row.content_hash = status.content_hash
        row.state = status.state.value
        row.message = status.message
        row.observed_at = status.observed_at
        row.reported_at = now
    if outcome is not None:
        row.synced_generation = status.generation
    return outcome


async def record_statuses(
    session: AsyncSession, cluster_id: str, statuses: Sequence[PolicyApplyStatus], *, full: bool
) -> None:
    """Keep one row per (policy, cluster): the newest report wins (a report for an older generation,
    or older than the stored one, is ignored; reports for unknown policy ids too). Rows change only
    when generation, hash, state or message do, so a heartbeat repeating the same statuses costs
    one read and writes nothing. ``full`` (a heartbeat's complete list): policies the spoke no
    longer mentions keep their last row, so both modes store the same way; it only shows in the log.
    ``observed_at`` is kept no later than the hub's clock: a spoke's clock cannot date a status
    in the future (and so have it win over every later report)."""
    now = datetime.now(UTC)
    statuses = [s if s.observed_at <= now else s.model_copy(update={"observed_at": now}) for s in statuses]
    newest = _newest(statuses)
    if not newest:
        return
    # the common case first, without locks: every report already stored as it is
    current = await repo.status_snapshot(session, cluster_id, newest.keys())
    unknown = set(newest) - set(current)
    if unknown:
        log.info("federation_status_unknown_policies", cluster_id=cluster_id, policy_ids=sorted(unknown)[:20])
    known = {pid: s for pid, s in newest.items() if pid in current}
    generations = {pid: current[pid][0] for pid in known}
    if all(
        (stored := current[pid][1]) is not None and _decide(stored, status, generations[pid]) == (False, None)
        for pid, status in known.items()
    ):
        return
    outcomes: list[str] = []
    rows = await repo.statuses_for_cluster(session, cluster_id, known.keys(), for_update=True)
    missing = sorted(pid for pid in known if pid not in rows)  # one lock order for every writer
    new_outcomes = {pid: _counts(known[pid], generations[pid], None) for pid in missing}
    inserted = await repo.insert_statuses(
        session,
        [
            {
                "policy_id": pid,
                "cluster_id": cluster_id,
                "generation": known[pid].generation,
                "content_hash": known[pid].content_hash,
                "state": known[pid].state.value,
                "message": known[pid].message,
                "observed_at": known[pid].observed_at,
                "reported_at": now,
                "synced_generation": known[pid].generation if new_outcomes[pid] is not None else None,
            }
            for pid in missing
        ],
    )
    outcomes += [o for pid in inserted if (o := new_outcomes[pid]) is not None]
    raced = [pid for pid in missing if pid not in inserted]
    if raced:  # another transaction inserted them first: update those as existing rows
        rows.update(await repo.statuses_for_cluster(session, cluster_id, raced, for_update=True))
    for pid, row in rows.items():
        outcome = _apply(row, known[pid], generations[pid], now)
        if outcome is not None:
            outcomes.append(outcome)
    await session.flush()
    for outcome in outcomes:
        SYNCS.labels(outcome=outcome).inc()
    log.debug("federation_statuses_recorded", cluster_id=cluster_id, count=len(known), full=full)

"""All SQL on the spoke's tables. Functions flush at most; the loops (the edge) commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qcdr_common.contracts.federation.v1 import CommandResult, PlacedPolicy, PolicyApplyState
from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.spoke.models import (
    STATE_ROW_ID,
    SpokeBaselineRow,
    SpokeCommandResultRow,
    SpokePolicyRow,
    SpokePolicyStatusRow,
    SpokeReplicaRow,
    SpokeStateRow,
)

# ---------------------------------------------------------------------------- state


async def get_state(session: AsyncSession, *, for_update: bool = False) -> SpokeStateRow | None:
    stmt = select(SpokeStateRow).where(SpokeStateRow.id == STATE_ROW_ID)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def ensure_state(session: AsyncSession, cluster_name: str, hub_url: str) -> tuple[SpokeStateRow, bool]:
    """The state row, created if missing. When the configured hub or cluster name differ from the
    stored ones the registration belongs to someone else: it is dropped, as are the pull positions
    (etag, cursor), and the second value is True."""
    await session.execute(
        insert(SpokeStateRow)
        .values(id=STATE_ROW_ID, cluster_name=cluster_name, hub_url=hub_url)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    row = await get_state(session, for_update=True)
    assert row is not None
    if row.cluster_name == cluster_name and row.hub_url == hub_url:
        return row, False
    row.cluster_name = cluster_name
    row.hub_url = hub_url
    row.cluster_id = None
    row.credential_id = None
    row.credential = None
    row.registered_at = None
    row.credential_issued_at = None
    row.policies_etag = None
    row.baselines_cursor = None
    row.updated_at = func.now()
    await session.flush()
    return row, True


async def store_credential(
    session: AsyncSession,
    *,
    cluster_id: str,
    credential_id: str,
    credential: str,
    issued_at: datetime,
    registered: bool,
) -> None:
    values: dict[str, Any] = {
        "cluster_id": cluster_id,
        "credential_id": credential_id,
        "credential": credential,
        "credential_issued_at": issued_at,
        "last_contact_at": issued_at,
        "last_error": None,
        "updated_at": func.now(),
    }
    if registered:
        values["registered_at"] = issued_at
    await session.execute(update(SpokeStateRow).where(SpokeStateRow.id == STATE_ROW_ID).values(**values))


async def drop_credential(session: AsyncSession, credential_id: str, error: str) -> bool:
    """Forget the credential if it is still ``credential_id``; True when it was."""
    result = await session.execute(
        update(SpokeStateRow)
        .where(SpokeStateRow.id == STATE_ROW_ID, SpokeStateRow.credential_id == credential_id)
        .values(
            credential_id=None,
            credential=None,
            credential_issued_at=None,
            last_error=error,
            updated_at=func.now(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record_contact(
    session: AsyncSession, *, last_contact_at: datetime | None, last_error: str | None
) -> None:
    values: dict[str, Any] = {"last_error": last_error, "updated_at": func.now()}
    if last_contact_at is not None:
        values["last_contact_at"] = last_contact_at
    await session.execute(update(SpokeStateRow).where(SpokeStateRow.id == STATE_ROW_ID).values(**values))


async def set_policies_etag(session: AsyncSession, etag: str | None) -> None:
    await session.execute(
        update(SpokeStateRow)
        .where(SpokeStateRow.id == STATE_ROW_ID)
        .values(policies_etag=etag, updated_at=func.now())
    )


async def set_baselines_cursor(session: AsyncSession, cursor: str | None) -> None:
    await session.execute(
        update(SpokeStateRow)
        .where(SpokeStateRow.id == STATE_ROW_ID)
        .values(baselines_cursor=cursor, updated_at=func.now())
    )


# ---------------------------------------------------------------------------- policies


async def held_policies(session: AsyncSession, *, for_update: bool = False) -> dict[str, SpokePolicyRow]:
    stmt = select(SpokePolicyRow)
    if for_update:
        stmt = stmt.with_for_update()
    return {row.policy_id: row for row in (await session.execute(stmt)).scalars()}


async def held_policy(session: AsyncSession, policy_id: str) -> SpokePolicyRow | None:
    return await session.get(SpokePolicyRow, policy_id)


def manifest_identity(manifest: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    """(apiVersion, kind, namespace, name) of a rendered manifest (the hub checked its structure)."""
    metadata = manifest.get("metadata") or {}
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return (
        str(manifest.get("apiVersion", "")),
        str(manifest.get("kind", "")),
        str(namespace) if namespace else None,
        str(name or ""),
    )


async def upsert_policies(
    session: AsyncSession, policies: Sequence[PlacedPolicy], received_at: datetime
) -> None:
    if not policies:
        return
    rows = []
    for p in policies:
        api_version, kind, namespace, manifest_name = manifest_identity(p.manifest)
        rows.append(
            {
                "policy_id": p.policy_id,
                "name": p.name,
                "generation": p.generation,
                "content_hash": p.content_hash,
                "enforce": p.enforce,
                "api_version": api_version,
                "kind": kind,
                "namespace": namespace,
                "manifest_name": manifest_name,
                "manifest": p.manifest,
                "received_at": received_at,
            }
        )
    stmt = insert(SpokePolicyRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SpokePolicyRow.policy_id],
        set_={c: stmt.excluded[c] for c in rows[0] if c != "policy_id"},
    )
    await session.execute(stmt, rows)


async def delete_policies(session: AsyncSession, policy_ids: Iterable[str]) -> None:
    ids = list(policy_ids)
    if ids:
        await session.execute(delete(SpokePolicyStatusRow).where(SpokePolicyStatusRow.policy_id.in_(ids)))
        await session.execute(delete(SpokePolicyRow).where(SpokePolicyRow.policy_id.in_(ids)))


async def set_pending(session: AsyncSession, policies: Sequence[PlacedPolicy], observed_at: datetime) -> None:
    """A new or changed policy is pending until the response service says what it made of it."""
    if not policies:
        return
    rows = [
        {
            "policy_id": p.policy_id,
            "generation": p.generation,
            "content_hash": p.content_hash,
            "state": PolicyApplyState.PENDING.value,
            "message": None,
            "observed_at": observed_at,
            "reported_at": None,
        }
        for p in policies
    ]
    stmt = insert(SpokePolicyStatusRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SpokePolicyStatusRow.policy_id],
        set_={c: stmt.excluded[c] for c in rows[0] if c != "policy_id"},
    )
    await session.execute(stmt, rows)


# ---------------------------------------------------------------------------- statuses


@dataclass(frozen=True)
class HeldStatus:
    policy: SpokePolicyRow
    status: SpokePolicyStatusRow | None


async def held_with_status(session: AsyncSession) -> list[HeldStatus]:
    stmt = (
        select(SpokePolicyRow, SpokePolicyStatusRow)
        .outerjoin(SpokePolicyStatusRow, SpokePolicyStatusRow.policy_id == SpokePolicyRow.policy_id)
        .order_by(SpokePolicyRow.name)
    )
    return [HeldStatus(row[0], row[1]) for row in (await session.execute(stmt)).all()]


async def status_for_update(session: AsyncSession, policy_id: str) -> SpokePolicyStatusRow | None:
    stmt = select(SpokePolicyStatusRow).where(SpokePolicyStatusRow.policy_id == policy_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def unreported(session: AsyncSession, limit: int) -> list[SpokePolicyStatusRow]:
    stmt = (
        select(SpokePolicyStatusRow)
        .where(SpokePolicyStatusRow.reported_at.is_(None))
        .order_by(SpokePolicyStatusRow.observed_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def mark_reported(
    session: AsyncSession, sent: Iterable[tuple[str, int, datetime]], reported_at: datetime
) -> None:
    """Mark statuses reported, unless they changed since they were sent (then they go out again)."""
    keys = list(sent)
    if not keys:
        return
    await session.execute(
        update(SpokePolicyStatusRow)
        .where(
            tuple_(
                SpokePolicyStatusRow.policy_id,
                SpokePolicyStatusRow.generation,
                SpokePolicyStatusRow.observed_at,
            ).in_(keys)
        )
        .values(reported_at=reported_at)
        .execution_options(synchronize_session=False)
    )


# ---------------------------------------------------------------------------- baselines


async def record_uploaded(session: AsyncSession, uploaded: Sequence[tuple[str, int]], at: datetime) -> None:
    if not uploaded:
        return
    rows = [{"profile_key": key, "generation": generation, "uploaded_at": at} for key, generation in uploaded]
    stmt = insert(SpokeBaselineRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SpokeBaselineRow.profile_key],
        set_={"generation": stmt.excluded.generation, "uploaded_at": stmt.excluded.uploaded_at},
        where=SpokeBaselineRow.generation < stmt.excluded.generation,
    )
    await session.execute(stmt, rows)


# ---------------------------------------------------------------------------- command results


@dataclass(frozen=True)
class CommandClaim:
    """Whether this replica runs a command, and if not, the result another one stored (None: that
    replica is running it right now)."""

    mine: bool
    result: CommandResult | None = None


async def claim_command(
    session: AsyncSession, command_id: str, *, now: datetime, stale_before: datetime
) -> CommandClaim:
    """Take a command on: this replica's when nobody has, or when the replica that took it left it
    unfinished since before ``stale_before`` (it died calling the response API: whether the call
    went through is unknown, and running it again is the only way to get an answer)."""
    taken = await session.scalar(
        insert(SpokeCommandResultRow)
        .values(command_id=command_id, started_at=now)
        .on_conflict_do_nothing(index_elements=[SpokeCommandResultRow.command_id])
        .returning(SpokeCommandResultRow.command_id)
    )
    if taken is None:
        taken = await session.scalar(
            update(SpokeCommandResultRow)
            .where(
                SpokeCommandResultRow.command_id == command_id,
                SpokeCommandResultRow.status_code.is_(None),
                SpokeCommandResultRow.started_at < stale_before,
            )
            .values(started_at=now)
            .returning(SpokeCommandResultRow.command_id)
        )
    if taken is not None:
        return CommandClaim(mine=True)
    row = (
        await session.execute(
            select(SpokeCommandResultRow.status_code, SpokeCommandResultRow.body).where(
                SpokeCommandResultRow.command_id == command_id
            )
        )
    ).one_or_none()
    if row is None:  # pruned between the two statements: nobody holds it
        return await claim_command(session, command_id, now=now, stale_before=stale_before)
    if row.status_code is None:
        return CommandClaim(mine=False)
    return CommandClaim(mine=False, result=CommandResult(status_code=row.status_code, body=row.body))


async def record_command_result(
    session: AsyncSession, command_id: str, result: CommandResult, finished_at: datetime
) -> None:
    await session.execute(
        update(SpokeCommandResultRow)
        .where(SpokeCommandResultRow.command_id == command_id)
        .values(status_code=result.status_code, body=result.body, finished_at=finished_at)
    )


async def prune_command_results(session: AsyncSession, before: datetime) -> int:
    """Forget the commands taken on before ``before`` (the hub no longer hands them out)."""
    result = await session.execute(
        delete(SpokeCommandResultRow).where(SpokeCommandResultRow.started_at < before)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- replicas


@dataclass(frozen=True)
class ReplicasView:
    """The counts summed and the problems joined over the replicas seen since a time."""

    counts: dict[str, int]
    problems: tuple[str, ...]
    replicas: int


async def report_replica(
    session: AsyncSession,
    replica_id: str,
    *,
    counts: Mapping[str, int],
    problems: Sequence[str],
    now: datetime,
    live_after: datetime,
    forget_before: datetime,
) -> ReplicasView:
    """Store this replica's counts and problems, forget replicas gone since ``forget_before``, and
    return the view over the replicas seen after ``live_after`` (this one included)."""
    values = {"counts": dict(counts), "problems": list(problems), "seen_at": now}
    await session.execute(
        insert(SpokeReplicaRow)
        .values(replica_id=replica_id, **values)
        .on_conflict_do_update(index_elements=[SpokeReplicaRow.replica_id], set_=values)
    )
    await session.execute(delete(SpokeReplicaRow).where(SpokeReplicaRow.seen_at < forget_before))
    return await replicas_view(session, live_after=live_after)


async def replicas_view(
    session: AsyncSession, *, live_after: datetime, exclude: str | None = None
) -> ReplicasView:
    """The counts summed and the problems joined over the replicas seen after ``live_after``
    (but ``exclude``, a replica whose live figures the caller has in hand)."""
    live = select(SpokeReplicaRow.counts, SpokeReplicaRow.problems).where(
        SpokeReplicaRow.seen_at > live_after
    )
    if exclude is not None:
        live = live.where(SpokeReplicaRow.replica_id != exclude)
    rows = (await session.execute(live)).all()
    total: dict[str, int] = {}
    joined: set[str] = set()
    for row in rows:
        for key, value in row.counts.items():
            total[key] = total.get(key, 0) + int(value)
        joined.update(str(p) for p in row.problems)
    return ReplicasView(counts=total, problems=tuple(sorted(joined)), replicas=len(rows))

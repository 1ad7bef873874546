"""All SQL of the policy lifecycle. Functions only flush; the caller's unit of work commits."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qcdr_common.api.pagination import PageRequest, keyset
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from qcdr_response.lifecycle.generation import Scope
from qcdr_response.lifecycle.models import (
    FindingPolicyRow,
    FindingRow,
    PolicyRow,
    PolicyVersionRow,
    ReceivedRow,
)

# PostgreSQL takes at most 32767 bind parameters per statement
_CHUNK = 2000


def _chunks(rows: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def mark_received(session: AsyncSession, envelope_ids: Sequence[str]) -> set[str]:
    """Record envelope ids; returns those not seen before (the ones to handle).

    A concurrent transaction inserting the same id makes this one wait for it and then skip the
    id, so two consumers that both got a message never both handle it.
    """
    if not envelope_ids:
        return set()
    stmt = (
        insert(ReceivedRow)
        .on_conflict_do_nothing(index_elements=["envelope_id"])
        .returning(ReceivedRow.envelope_id)
    )
    rows = [{"envelope_id": e} for e in sorted(set(envelope_ids))]
    return set((await session.execute(stmt, rows)).scalars())


async def insert_findings(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert findings (a finding id already stored is left as it is); returns the ids inserted.

    Rows go in id order so that concurrent batches take row locks in the same order; one cached
    statement executed for many rows (SQLAlchemy's insertmanyvalues batches them).
    """
    if not rows:
        return set()
    stmt = insert(FindingRow).on_conflict_do_nothing(index_elements=["id"]).returning(FindingRow.id)
    ordered = sorted(rows, key=lambda r: str(r["id"]))
    return set((await session.execute(stmt, ordered)).scalars())


async def lock_scopes(session: AsyncSession, scopes: Iterable[Scope]) -> None:
    """Serialize regeneration per scope across processes (advisory locks, held until commit).

    Taken in sorted order so that two batches touching the same scopes never deadlock; after the
    lock, the scope query sees every finding committed by the batch that held it before.
    """
    for scope in sorted(set(scopes)):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('qcdr-response-scope'), hashtext(:key))"),
            {"key": f"{scope.family}/{scope.namespace}"},
        )


async def scope_finding_ids(session: AsyncSession, scope: Scope) -> list[str]:
    stmt = select(FindingRow.id).where(
        FindingRow.family == scope.family, FindingRow.namespace == scope.namespace
    )
    return list((await session.execute(stmt)).scalars())


async def ioc_finding_ids(session: AsyncSession) -> list[str]:
    """Every finding that carries a network indicator (the partial index on ``ioc``)."""
    stmt = select(FindingRow.id).where(FindingRow.ioc.is_(True))
    return list((await session.execute(stmt)).scalars())


async def ioc_addresses(session: AsyncSession) -> set[str]:
    """The destination addresses the indicator findings name (for the refresher's fingerprint)."""
    rows = await session.execute(
        select(FindingRow.payload["network"]["ip"].astext)
        .where(FindingRow.ioc.is_(True), FindingRow.payload["network"]["ip"].astext.is_not(None))
        .distinct()
    )
    return {str(ip) for ip in rows.scalars()}


async def family_versions(session: AsyncSession, family: str) -> dict[str, int]:
    """``kind/namespace/name`` → current version of every policy of ``family``."""
    stmt = select(PolicyRow.kind, PolicyRow.namespace, PolicyRow.name, PolicyRow.current_version).where(
        PolicyRow.family == family
    )
    return {f"{r.kind}/{r.namespace}/{r.name}": r.current_version for r in await session.execute(stmt)}


async def reputation_unblocked(session: AsyncSession, ips: Collection[str], threshold: int) -> set[str]:
    """Of ``ips``, those AbuseIPDB scored below ``threshold`` (or whitelisted) and no feed lists:
    ingest's ``intel_reputation`` and ``ingest_intel_listed`` (same database), when they exist."""
    if not ips:
        return set()
    reputation, listed = (
        await session.execute(
            text(
                "SELECT to_regclass('intel_reputation') IS NOT NULL, "
                "to_regclass('ingest_intel_listed') IS NOT NULL"
            )
        )
    ).one()
    if not reputation:
        return set()
    not_listed = (
        "AND NOT EXISTS (SELECT 1 FROM ingest_intel_listed l WHERE l.cidr >>= r.ip)" if listed else ""
    )
    rows = await session.execute(
        text(
            "SELECT host(r.ip) AS ip FROM intel_reputation r "  # noqa: S608 - literal SQL only
            "WHERE r.ip = ANY(CAST(:ips AS inet[])) AND (r.score < :threshold OR r.is_whitelisted) "
            + not_listed
        ),
        {"ips": sorted(ips), "threshold": threshold},
    )
    return {str(r.ip) for r in rows}


async def finding_payloads(session: AsyncSession, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for part in _chunks(list(ids), 10_000):
        stmt = select(FindingRow.id, FindingRow.payload).where(FindingRow.id.in_(part))
        out.update({row.id: row.payload for row in await session.execute(stmt)})
    return out


async def policy_for_update(session: AsyncSession, kind: str, namespace: str, name: str) -> PolicyRow | None:
    stmt = (
        select(PolicyRow)
        .where(PolicyRow.kind == kind, PolicyRow.namespace == namespace, PolicyRow.name == name)
        .with_for_update()
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def policy_by_id(
    session: AsyncSession, policy_id: int, *, for_update: bool = False
) -> PolicyRow | None:
    stmt = select(PolicyRow).where(PolicyRow.id == policy_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def add_policy(session: AsyncSession, row: PolicyRow) -> PolicyRow:
    session.add(row)
    await session.flush()
    return row


async def version(session: AsyncSession, policy_id: int, number: int) -> PolicyVersionRow | None:
    stmt = select(PolicyVersionRow).where(
        PolicyVersionRow.policy_id == policy_id, PolicyVersionRow.version == number
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def versions(session: AsyncSession, policy_id: int) -> list[PolicyVersionRow]:
    stmt = (
        select(PolicyVersionRow)
        .where(PolicyVersionRow.policy_id == policy_id)
        .order_by(PolicyVersionRow.version)
    )
    return list((await session.execute(stmt)).scalars())


async def add_version(session: AsyncSession, row: PolicyVersionRow) -> PolicyVersionRow:
    session.add(row)
    await session.flush()
    return row


async def touch(session: AsyncSession, policy: PolicyRow, **values: Any) -> None:
    """Update a policy's columns and ``updated_at`` in one statement, and the loaded object with them
    (as committed state: no second UPDATE at the next flush, no lazy load afterwards)."""
    stmt = (
        update(PolicyRow)
        .where(PolicyRow.id == policy.id)
        .values(**values, updated_at=func.now())
        .returning(PolicyRow.updated_at)
        .execution_options(synchronize_session=False)
    )
    updated_at = (await session.execute(stmt)).scalar_one()
    for key, value in {**values, "updated_at": updated_at}.items():
        set_committed_value(policy, key, value)


async def link_findings(session: AsyncSession, links: Sequence[dict[str, Any]]) -> int:
    """Insert finding links; a finding already linked keeps its link. Returns the rows inserted."""
    if not links:
        return 0
    stmt = (
        insert(FindingPolicyRow)
        .on_conflict_do_nothing(index_elements=["finding_id"])
        .returning(FindingPolicyRow.finding_id)
    )
    ordered = sorted(links, key=lambda r: str(r["finding_id"]))
    return len((await session.execute(stmt, ordered)).all())


@dataclass(frozen=True)
class PolicyFilter:
    status: str | None = None
    family: str | None = None
    namespace: str | None = None
    kind: str | None = None


async def list_policies(session: AsyncSession, where: PolicyFilter, page: PageRequest) -> list[PolicyRow]:
    """One page of policies, newest first (keyset on the id), with one extra row to detect more."""
    stmt = select(PolicyRow)
    if where.status is not None:
        stmt = stmt.where(PolicyRow.status == where.status)
    if where.family is not None:
        stmt = stmt.where(PolicyRow.family == where.family)
    if where.namespace is not None:
        stmt = stmt.where(PolicyRow.namespace == where.namespace)
    if where.kind is not None:
        stmt = stmt.where(PolicyRow.kind == where.kind)
    stmt = keyset(stmt, page, PolicyRow.__table__.c.id, PolicyRow.__table__.c.id)
    return list((await session.execute(stmt)).scalars())


async def finding_link(
    session: AsyncSession, finding_id: str
) -> tuple[FindingPolicyRow, PolicyVersionRow | None, PolicyRow | None] | None:
    stmt = (
        select(FindingPolicyRow, PolicyVersionRow, PolicyRow)
        .outerjoin(PolicyVersionRow, PolicyVersionRow.id == FindingPolicyRow.policy_version_id)
        .outerjoin(PolicyRow, PolicyRow.id == PolicyVersionRow.policy_id)
        .where(FindingPolicyRow.finding_id == finding_id)
    )
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1], row[2])


async def current_documents(
    session: AsyncSession, *, exclude_status: str | None = None
) -> list[tuple[PolicyRow, PolicyVersionRow]]:
    """Every policy with its current version (optionally leaving one status out)."""
    stmt = (
        select(PolicyRow, PolicyVersionRow)
        .join(
            PolicyVersionRow,
            (PolicyVersionRow.policy_id == PolicyRow.id)
            & (PolicyVersionRow.version == PolicyRow.current_version),
        )
        .order_by(PolicyRow.id)
    )
    if exclude_status is not None:
        stmt = stmt.where(PolicyRow.status != exclude_status)
    return [(p, v) for p, v in (await session.execute(stmt)).all()]


async def policies_to_apply(session: AsyncSession, status: str) -> list[int]:
    """Ids of policies in ``status`` whose current version is not the applied one."""
    stmt = (
        select(PolicyRow.id)
        .where(
            PolicyRow.status == status,
            (PolicyRow.applied_version.is_(None)) | (PolicyRow.applied_version != PolicyRow.current_version),
        )
        .order_by(PolicyRow.id)
    )
    return list((await session.execute(stmt)).scalars())

"""All SQL of the federated policies (the hub's tables ``federation_policies``,
``federation_policy_versions``, ``federation_policy_status``; reads ``federation_clusters``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qcdr_common.api.pagination import PageRequest, keyset
from sqlalchemy import case, delete, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.policies.models import (
    FederatedPolicyRow,
    FederatedPolicyVersionRow,
    PolicyReleaseRow,
    PolicyStatusRow,
)

P = FederatedPolicyRow
V = FederatedPolicyVersionRow
S = PolicyStatusRow
R = PolicyReleaseRow


@dataclass(frozen=True)
class StatusView:
    """A status row as read for the views (a plain tuple: the health sweep reads them all)."""

    policy_id: str
    cluster_id: str
    generation: int
    content_hash: str
    state: str
    message: str | None
    observed_at: datetime
    synced_generation: int | None


@dataclass(frozen=True)
class LiveCluster:
    id: str
    name: str
    labels: dict[str, str]


# --------------------------------------------------------------------------- policies


async def get(
    session: AsyncSession, policy_id: str, *, for_update: bool = False, include_deleted: bool = False
) -> P | None:
    stmt = select(P).where(P.id == policy_id)
    if not include_deleted:
        stmt = stmt.where(P.deleted_at.is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    row: P | None = (await session.scalars(stmt)).one_or_none()
    return row


async def get_by_name(session: AsyncSession, name: str, *, for_update: bool = False) -> P | None:
    stmt = select(P).where(P.name == name, P.deleted_at.is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    row: P | None = (await session.scalars(stmt)).one_or_none()
    return row


async def page(session: AsyncSession, request: PageRequest) -> Sequence[P]:
    """Live policies by name (keyset: name, id)."""
    stmt = keyset(
        select(P).where(P.deleted_at.is_(None)),
        request,
        P.__table__.c.name,
        P.__table__.c.id,
        descending=False,
    )
    return (await session.scalars(stmt)).all()


async def live_heads(session: AsyncSession) -> list[tuple[str, int]]:
    """(id, generation) of every live policy, without the specs (cheap: the common case finds
    every spec already parsed)."""
    rows = await session.execute(select(P.id, P.generation).where(P.deleted_at.is_(None)).order_by(P.name))
    return [(str(i), int(g)) for i, g in rows.all()]


async def heads_with_specs(
    session: AsyncSession, ids: Collection[str]
) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(id, name, generation, spec) of the given live policies."""
    if not ids:
        return []
    rows = await session.execute(
        select(P.id, P.name, P.generation, P.spec).where(P.id.in_(list(ids)), P.deleted_at.is_(None))
    )
    return [(str(i), str(n), int(g), dict(s)) for i, n, g, s in rows.all()]


async def gated_heads(session: AsyncSession) -> list[tuple[str, bool]]:
    """(id, suspended) of the live policies whose clusters get only what was released to them:
    suspended ones and those with a progressive rollout."""
    progressive = P.spec["rollout"]["strategy"].astext == "progressive"
    rows = await session.execute(
        select(P.id, P.suspended_at.is_not(None)).where(
            P.deleted_at.is_(None), P.suspended_at.is_not(None) | progressive
        )
    )
    return [(str(i), bool(suspended)) for i, suspended in rows.all()]


async def released_versions(session: AsyncSession, policy_ids: Collection[str]) -> list[tuple[str, str, int]]:
    """(policy id, cluster name, generation) released, on live clusters."""
    if not policy_ids:
        return []
    rows = await session.execute(
        select(R.policy_id, ClusterRow.name, R.generation)
        .join(ClusterRow, ClusterRow.id == R.cluster_id)
        .where(R.policy_id.in_(list(policy_ids)), ClusterRow.removed_at.is_(None))
    )
    return [(str(p), str(c), int(g)) for p, c, g in rows.all()]


async def version_specs(
    session: AsyncSession, pairs: Collection[tuple[str, int]]
) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(id, name, generation, spec) of the given (policy id, generation) versions."""
    if not pairs:
        return []
    rows = await session.execute(
        select(V.policy_id, P.name, V.generation, V.spec)
        .join(P, P.id == V.policy_id)
        .where(tuple_(V.policy_id, V.generation).in_(list(pairs)))
    )
    return [(str(i), str(n), int(g), dict(spec)) for i, n, g, spec in rows.all()]


async def releases_of(session: AsyncSession, policy_id: str) -> dict[str, tuple[int, datetime]]:
    """cluster id -> (generation released, when)."""
    rows = await session.execute(
        select(R.cluster_id, R.generation, R.released_at).where(R.policy_id == policy_id)
    )
    return {str(c): (int(g), at) for c, g, at in rows.all()}


async def release(session: AsyncSession, policy_id: str, generations: dict[str, int], now: datetime) -> None:
    """Release ``generations`` (cluster id -> generation) of a policy, replacing earlier releases."""
    if not generations:
        return
    stmt = insert(R).values(
        [
            {"policy_id": policy_id, "cluster_id": cluster_id, "generation": generation, "released_at": now}
            for cluster_id, generation in sorted(generations.items())
        ]
    )
    # a new generation for a cluster remembers the one it replaces; releasing the same again keeps
    # what was remembered
    previous = case((R.generation != stmt.excluded.generation, R.generation), else_=R.previous_generation)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[R.policy_id, R.cluster_id],
            set_={
                "generation": stmt.excluded.generation,
                "released_at": stmt.excluded.released_at,
                "previous_generation": previous,
            },
        )
    )


async def roll_back_releases(
    session: AsyncSession, policy_id: str, generation: int, now: datetime
) -> list[str]:
    """Give the clusters released ``generation`` what they had before (none: the release goes);
    the cluster ids changed."""
    rows = await session.execute(
        select(R.cluster_id, R.previous_generation).where(
            R.policy_id == policy_id, R.generation == generation
        )
    )
    before = {str(c): (int(p) if p is not None else None) for c, p in rows.all()}
    back = {c: g for c, g in before.items() if g is not None}
    for cluster_id, old in back.items():
        await session.execute(
            update(R)
            .where(R.policy_id == policy_id, R.cluster_id == cluster_id)
            .values(generation=old, previous_generation=None, released_at=now)
        )
    gone = [c for c, g in before.items() if g is None]
    if gone:
        await session.execute(delete(R).where(R.policy_id == policy_id, R.cluster_id.in_(gone)))
    return sorted(before)


def add_version(session: AsyncSession, row: P, actor: str, now: datetime) -> None:
    session.add(
        V(
            policy_id=row.id,
            generation=row.generation,
            spec=row.spec,
            content_hash=row.content_hash,
            created_by=actor,
            created_at=now,
        )
    )


async def soft_delete(session: AsyncSession, where: Any, now: datetime) -> bool:
    result = await session.execute(
        update(P).where(where, P.deleted_at.is_(None)).values(deleted_at=now, updated_at=now).returning(P.id)
    )
    return result.first() is not None


async def versions_page(session: AsyncSession, policy_id: str, request: PageRequest) -> Sequence[V]:
    """Newest generation first (the generation is the row's key within the policy)."""
    stmt = keyset(
        select(V).where(V.policy_id == policy_id), request, V.__table__.c.generation, V.__table__.c.generation
    )
    return (await session.scalars(stmt)).all()


# --------------------------------------------------------------------------- clusters


async def live_clusters(session: AsyncSession) -> list[LiveCluster]:
    rows = await session.execute(
        select(ClusterRow.id, ClusterRow.name, ClusterRow.labels)
        .where(ClusterRow.removed_at.is_(None))
        .order_by(ClusterRow.name)
    )
    return [LiveCluster(i, n, dict(labels or {})) for i, n, labels in rows.all()]


async def live_cluster_names(session: AsyncSession) -> set[str]:
    rows = await session.scalars(select(ClusterRow.name).where(ClusterRow.removed_at.is_(None)))
    return set(rows.all())


async def cluster_names(session: AsyncSession, ids: Collection[str]) -> dict[str, tuple[str, bool]]:
    """id -> (name, removed) for the given cluster ids."""
    if not ids:
        return {}
    rows = await session.execute(
        select(ClusterRow.id, ClusterRow.name, ClusterRow.removed_at).where(ClusterRow.id.in_(list(ids)))
    )
    return {i: (n, removed is not None) for i, n, removed in rows.all()}


# string_agg ... ORDER BY reads plainer as SQL than in the expression language
_FINGERPRINT = text(
    "SELECT"
    " (SELECT md5(coalesce(string_agg(id || ':' || generation::text"
    "   || CASE WHEN suspended_at IS NULL THEN '' ELSE '/suspended' END, ',' ORDER BY id), ''))"
    "  FROM federation_policies WHERE deleted_at IS NULL),"
    " (SELECT md5(coalesce(string_agg(name || '=' || labels::text, ',' ORDER BY name), ''))"
    "  FROM federation_clusters WHERE removed_at IS NULL),"
    " (SELECT md5(coalesce(string_agg(policy_id || ':' || cluster_id || ':' || generation::text,"
    "   ',' ORDER BY policy_id, cluster_id), ''))"
    "  FROM federation_policy_releases)"
)


async def placement_fingerprint(session: AsyncSession) -> tuple[str, str, str]:
    """One cheap query that changes whenever any cluster's placement could: md5 of the live
    policies' (id, generation, suspended), of the live clusters' (name, labels) and of the
    releases of rollouts. Heartbeats touch none, so they do not make every hub replica recompute."""
    row = (await session.execute(_FINGERPRINT)).one()
    return str(row[0]), str(row[1]), str(row[2])


# --------------------------------------------------------------------------- statuses


async def statuses_for_cluster(
    session: AsyncSession, cluster_id: str, policy_ids: Collection[str], *, for_update: bool = False
) -> dict[str, S]:
    if not policy_ids:
        return {}
    stmt = select(S).where(S.cluster_id == cluster_id, S.policy_id.in_(list(policy_ids)))
    if for_update:
        stmt = stmt.order_by(S.policy_id).with_for_update()
    return {row.policy_id: row for row in (await session.scalars(stmt)).all()}


async def insert_statuses(session: AsyncSession, values: Sequence[dict[str, Any]]) -> set[str]:
    """Insert new status rows; the policy ids inserted (a row another transaction inserted first
    is left alone and not returned)."""
    if not values:
        return set()
    stmt = (
        insert(S)
        .values(list(values))
        .on_conflict_do_nothing(index_elements=[S.policy_id, S.cluster_id])
        .returning(S.policy_id)
    )
    return set((await session.scalars(stmt)).all())


_VIEW_COLUMNS = (
    S.policy_id,
    S.cluster_id,
    S.generation,
    S.content_hash,
    S.state,
    S.message,
    S.observed_at,
    S.synced_generation,
)


async def status_snapshot(
    session: AsyncSession, cluster_id: str, policy_ids: Collection[str]
) -> dict[str, tuple[int, StatusView | None]]:
    """For each of ``policy_ids`` that exists (deleted or not): its current generation and the
    cluster's stored status, in one query, without locks."""
    if not policy_ids:
        return {}
    stmt = (
        select(P.id, P.generation, *_VIEW_COLUMNS)
        .select_from(P)
        .outerjoin(S, (S.policy_id == P.id) & (S.cluster_id == cluster_id))
        .where(P.id.in_(list(policy_ids)))
    )
    found: dict[str, tuple[int, StatusView | None]] = {}
    for row in (await session.execute(stmt)).all():
        policy_id, generation, *status = row
        found[str(policy_id)] = (int(generation), StatusView(*status) if status[0] is not None else None)
    return found


async def statuses_of_policy(session: AsyncSession, policy_id: str) -> list[StatusView]:
    rows = await session.execute(select(*_VIEW_COLUMNS).where(S.policy_id == policy_id))
    return [StatusView(*r) for r in rows.all()]


async def statuses_of_live(session: AsyncSession) -> list[StatusView]:
    """Status rows of live policies on live clusters."""
    stmt = (
        select(*_VIEW_COLUMNS)
        .join(P, P.id == S.policy_id)
        .join(ClusterRow, ClusterRow.id == S.cluster_id)
        .where(P.deleted_at.is_(None), ClusterRow.removed_at.is_(None))
    )
    return [StatusView(*r) for r in (await session.execute(stmt)).all()]


async def clusters_failing(session: AsyncSession) -> set[str]:
    stmt = (
        select(ClusterRow.name)
        .distinct()
        .join(S, S.cluster_id == ClusterRow.id)
        .join(P, P.id == S.policy_id)
        .where(
            P.deleted_at.is_(None),
            ClusterRow.removed_at.is_(None),
            S.generation == P.generation,
            S.state == "failed",
        )
    )
    return {str(name) for name in (await session.scalars(stmt)).all()}

"""The rules of federated policies, for the operator API, the CRD controller (hub-core and the
controller call these too) and the spoke-facing routes. Functions flush, never commit: the caller
commits, then calls :func:`~qcdr_federation.hub.policies.notify.notify_placements_changed` so
spokes waiting on a long poll hear of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from qcdr_common.contracts.federation.v1 import (
    FederatedPolicySpec,
    PlacedPolicySet,
    PolicyApplyState,
)
from qcdr_common.logging import get_logger
from qcdr_common.streams.envelope import uuid7
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.hub.policies import repository as repo
from qcdr_federation.hub.policies.issues import Issue, PolicySpecError
from qcdr_federation.hub.policies.models import FederatedPolicyRow
from qcdr_federation.hub.policies.placement import places_on
from qcdr_federation.hub.policies.render import API_VERSIONS, check_spec, spec_hash, spec_json
from qcdr_federation.hub.policies.rollout import (
    ClusterPhase,
    RolloutPhase,
    gated,
    progress_of,
    snapshot_releases,
)
from qcdr_federation.hub.policies.schemas import (
    CellState,
    ClusterPolicyStatus,
    FederatedPolicyStatus,
    PolicyCell,
    RolloutCluster,
    RolloutStatus,
)
from qcdr_federation.hub.policies.sets import (
    RENDER_CACHE,
    SPEC_CACHE,
    Gate,
    LivePolicy,
    build_set,
    render_error_message,
)

# recording statuses lives in its own module; it is part of this module's interface
from qcdr_federation.hub.policies.statuses import record_statuses as record_statuses

log = get_logger("qcdr.federation.policies")

SOURCES = frozenset({"api", "crd"})


def new_policy_id() -> str:
    return f"fp-{uuid7()}"


# --------------------------------------------------------------------------- writes


async def apply_spec(
    session: AsyncSession, name: str, spec: FederatedPolicySpec, *, source: str, actor: str
) -> FederatedPolicyRow:
    """Create the policy ``name`` or update it; a new generation (and a version row) only when the
    spec's content hash changes, so applying the same spec again changes nothing. PolicySpecError
    (every issue) for a spec the hub refuses; nothing is written then."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, not {source!r}")
    check_spec(spec, await repo.live_cluster_names(session))
    content_hash = spec_hash(spec)
    kind = str(spec.template["kind"])
    now = datetime.now(UTC)
    row = await repo.get_by_name(session, name, for_update=True)
    if row is None:
        row = FederatedPolicyRow(
            id=new_policy_id(),
            name=name,
            api_version=API_VERSIONS[kind],
            kind=kind,
            spec=spec_json(spec),
            generation=1,
            content_hash=content_hash,
            source=source,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
        repo.add_version(session, row, actor, now)
        await session.flush()
        log.info(
            "federation_policy_created", policy_id=row.id, name=name, kind=kind, source=source, actor=actor
        )
        return row
    if row.content_hash == content_hash:
        return row
    if gated(spec, row.suspended_at is not None):
        before = LivePolicy.parse(row.id, row.name, row.generation, row.spec)
        if before is not None and not gated(before.spec, row.suspended_at is not None):
            # a rollout turned on: the clusters keep what they have until it reaches them
            await snapshot_releases(session, row)
    row.spec = spec_json(spec)
    row.kind = kind
    row.api_version = API_VERSIONS[kind]
    row.content_hash = content_hash
    row.generation += 1
    row.updated_at = now
    repo.add_version(session, row, actor, now)
    await session.flush()
    log.info(
        "federation_policy_updated",
        policy_id=row.id,
        name=name,
        generation=row.generation,
        source=source,
        actor=actor,
    )
    return row


async def delete_policy(session: AsyncSession, policy_id: str) -> bool:
    """Soft delete: the policy leaves every placed set. False when there was no live policy."""
    deleted = await repo.soft_delete(session, repo.P.id == policy_id, datetime.now(UTC))
    if deleted:
        log.info("federation_policy_deleted", policy_id=policy_id)
    return deleted


async def delete_by_name(session: AsyncSession, name: str) -> bool:
    deleted = await repo.soft_delete(session, repo.P.name == name, datetime.now(UTC))
    if deleted:
        log.info("federation_policy_deleted", name=name)
    return deleted


# --------------------------------------------------------------------------- placement


async def live_policies(session: AsyncSession) -> list[LivePolicy]:
    """Every live policy at its current generation, ordered by name (specs parsed once per
    process: usually one query of ids and generations)."""
    heads = await repo.live_heads(session)
    found: dict[str, LivePolicy | None] = {}
    missing = []
    for policy_id, generation in heads:
        known, policy = SPEC_CACHE.get(policy_id, generation)
        if known:
            found[policy_id] = policy
        else:
            missing.append(policy_id)
    # a policy updated between the two queries comes back at its newer generation: take that one
    for policy_id, name, generation, spec in await repo.heads_with_specs(session, missing):
        found[policy_id] = SPEC_CACHE.put(policy_id, name, generation, spec)
    policies = [found.get(policy_id) for policy_id, _ in heads]
    return [p for p in policies if p is not None]


async def live_gates(session: AsyncSession) -> dict[str, Gate]:
    """Policy id -> its gate, for the suspended policies and those rolling out progressively:
    the version released to each cluster (older generations parsed once per process too)."""
    heads = dict(await repo.gated_heads(session))
    if not heads:
        return {}
    releases = await repo.released_versions(session, heads.keys())
    versions: dict[tuple[str, int], LivePolicy | None] = {}
    missing = []
    for policy_id, _, generation in releases:
        known, version = SPEC_CACHE.get(policy_id, generation)
        if known:
            versions[(policy_id, generation)] = version
        else:
            missing.append((policy_id, generation))
    for policy_id, name, generation, spec in await repo.version_specs(session, set(missing)):
        versions[(policy_id, generation)] = SPEC_CACHE.put(policy_id, name, generation, spec)
    released: dict[str, dict[str, LivePolicy]] = {policy_id: {} for policy_id in heads}
    for policy_id, cluster_name, generation in releases:
        version = versions.get((policy_id, generation))
        if version is not None:
            released[policy_id][cluster_name] = version
    return {policy_id: Gate(frozen=heads[policy_id], released=released[policy_id]) for policy_id in heads}


async def placed_set(session: AsyncSession, cluster_name: str, labels: Mapping[str, str]) -> PlacedPolicySet:
    """What ``cluster_name`` (with the hub's ``labels`` for it) gets now, read from the database.
    The spoke-facing pull serves the same from memory (``app.state.placements``)."""
    policies = await live_policies(session)
    return build_set(cluster_name, labels, policies, gates=await live_gates(session)).placed


# --------------------------------------------------------------------------- views


def _state_of(row: repo.StatusView | None, render_error: str | None) -> tuple[CellState, str | None]:
    if row is not None:
        return PolicyApplyState(row.state), row.message
    if render_error is not None:
        return PolicyApplyState.FAILED, render_error
    return "pending", None


def _in_sync(row: repo.StatusView | None, placed: bool, generation: int, desired_hash: str | None) -> bool:
    if row is None:
        return False
    if not placed:
        # off this cluster now: in step once the spoke says it took it away
        return row.state == PolicyApplyState.REVOKED.value
    return row.generation == generation and desired_hash is not None and row.content_hash == desired_hash


def desired_hashes(
    cluster_name: str, labels: Mapping[str, str], policies: Sequence[LivePolicy]
) -> tuple[dict[str, str], dict[str, str]]:
    """For one cluster: policy id -> the content hash rendered for it, and policy id -> why it
    could not be rendered (placed, but left out)."""
    hashes: dict[str, str] = {}
    errors: dict[str, str] = {}
    for policy in policies:
        if not places_on(policy.spec, cluster_name, labels):
            continue
        try:
            hashes[policy.id] = RENDER_CACHE.render(policy, cluster_name).content_hash
        except PolicySpecError as exc:
            errors[policy.id] = render_error_message(policy, exc)
    return hashes, errors


async def status_matrix(session: AsyncSession) -> dict[str, dict[str, PolicyCell]]:
    """Cluster name -> policy id -> cell, for every live cluster: the policies placed on it and
    those it still reports (live policies only). Runs in every health sweep, so it reads status rows
    as plain tuples (no ORM identity map) and renders nothing it has rendered before.
    O(clusters × policies): for "does any cluster have a failed policy" alone,
    :func:`clusters_with_failed_policies` is one query."""
    policies = await live_policies(session)
    by_id = {p.id: p for p in policies}
    clusters = await repo.live_clusters(session)
    rows: dict[str, dict[str, repo.StatusView]] = {}
    for view in await repo.statuses_of_live(session):
        rows.setdefault(view.cluster_id, {})[view.policy_id] = view
    matrix: dict[str, dict[str, PolicyCell]] = {}
    for cluster in clusters:
        hashes, errors = desired_hashes(cluster.name, cluster.labels, policies)
        reported = rows.get(cluster.id, {})
        cells: dict[str, PolicyCell] = {}
        for policy_id in sorted(hashes.keys() | errors.keys() | reported.keys()):
            policy = by_id.get(policy_id)
            if policy is None:
                continue
            row = reported.get(policy_id)
            placed = policy_id in hashes or policy_id in errors
            state, message = _state_of(row, errors.get(policy_id))
            cells[policy_id] = PolicyCell(
                policy_id=policy_id,
                name=policy.name,
                desired_generation=policy.generation,
                generation=row.generation if row is not None else None,
                state=state,
                in_sync=_in_sync(row, placed, policy.generation, hashes.get(policy_id)),
                message=message,
                observed_at=row.observed_at if row is not None else None,
            )
        matrix[cluster.name] = cells
    return matrix


async def clusters_with_failed_policies(session: AsyncSession) -> set[str]:
    """Names of live clusters reporting ``failed`` for the current generation of a live policy."""
    return await repo.clusters_failing(session)


async def policy_status(session: AsyncSession, policy_id: str) -> FederatedPolicyStatus | None:
    """Every cluster the policy is placed on or has a status from; None for no live policy."""
    row = await repo.get(session, policy_id)
    if row is None:
        return None
    policy = LivePolicy.parse(row.id, row.name, row.generation, row.spec)
    if policy is None:
        raise PolicySpecError([Issue(("spec",), "the stored spec no longer parses")])
    statuses = {s.cluster_id: s for s in await repo.statuses_of_policy(session, policy_id)}
    live = {c.id: c for c in await repo.live_clusters(session)}
    others = await repo.cluster_names(session, set(statuses) - set(live))
    entries: list[ClusterPolicyStatus] = []
    for cluster_id in set(live) | set(statuses):
        status = statuses.get(cluster_id)
        cluster = live.get(cluster_id)
        if cluster is not None:
            name = cluster.name
            hashes, errors = desired_hashes(cluster.name, cluster.labels, [policy])
            desired, error = hashes.get(policy.id), errors.get(policy.id)
        else:
            name = others.get(cluster_id, (cluster_id, True))[0]
            desired, error = None, None
        placed = desired is not None or error is not None
        if not placed and status is None:
            continue
        state, message = _state_of(status, error)
        entries.append(
            ClusterPolicyStatus(
                cluster=name,
                placed=placed,
                desired_hash=desired,
                generation=status.generation if status is not None else None,
                content_hash=status.content_hash if status is not None else None,
                state=state,
                in_sync=_in_sync(status, placed, policy.generation, desired),
                message=message,
                observed_at=status.observed_at if status is not None else None,
            )
        )
    entries.sort(key=lambda e: e.cluster)
    return FederatedPolicyStatus(
        id=policy.id, name=policy.name, generation=policy.generation, clusters=entries
    )


# --------------------------------------------------------------------------- rollouts

PHASES: tuple[ClusterPhase, ...] = ("waiting", "updating", "done", "failed")


async def rollout_status(session: AsyncSession, row: FederatedPolicyRow, now: datetime) -> RolloutStatus:
    """``GET /v1/federated-policies/{id}/rollout``: a gated policy's progress, or for one that
    goes everywhere at once, each placed cluster's sync as a rollout phase. PolicySpecError when
    the stored spec no longer parses."""
    policy = LivePolicy.parse(row.id, row.name, row.generation, row.spec)
    if policy is None:
        raise PolicySpecError([Issue(("spec",), "the stored spec no longer parses")])
    progress = await progress_of(session, row, now)
    if progress is None:
        status = await policy_status(session, row.id)
        clusters = [
            RolloutCluster(
                cluster=c.cluster,
                released_generation=row.generation,
                phase="done" if c.in_sync else ("failed" if c.state == "failed" else "updating"),
                message=c.message,
            )
            for c in (status.clusters if status is not None else [])
            if c.placed
        ]
        phase: RolloutPhase = "complete" if all(c.phase == "done" for c in clusters) else "progressing"
    else:
        clusters = [
            RolloutCluster(
                cluster=c.cluster, released_generation=c.released_generation, phase=c.phase, message=c.message
            )
            for c in progress.clusters
        ]
        phase = progress.phase
    return RolloutStatus(
        id=row.id,
        name=row.name,
        generation=row.generation,
        strategy=policy.spec.rollout.strategy if policy.spec.rollout is not None else "all",
        phase=phase,
        suspended=row.suspended_at is not None,
        counts={
            p: sum(1 for c in clusters if c.phase == p) for p in ("waiting", "updating", "done", "failed")
        },
        clusters=clusters,
    )

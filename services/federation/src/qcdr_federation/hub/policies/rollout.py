"""Progressive rollouts and suspension of federated policies (hub role).

A policy with ``rollout.strategy: progressive``, and any suspended policy, is *gated*: each cluster
gets the generation released to it (``federation_policy_releases``), not simply the current one.
The rollout loop releases the current generation a few clusters at a time (:func:`assess` says which,
from what the clusters report) and the placements pick the releases up through their fingerprint.
Suspending keeps every cluster where it is: the releases stop moving and the placement is not
consulted, so nothing is added, updated or taken away until the policy is resumed. A rollout that
fails past its budget halts, or with ``on_failure: rollback`` gives the clusters it reached their
previous generation back (:func:`roll_back`) and stays rolled back until a resume or a new generation.

Functions flush, never commit, like ``service``; the loop commits and then tells the placements.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from qcdr_common.contracts.federation.v1 import FederatedPolicySpec, PolicyApplyState, Rollout
from qcdr_common.logging import get_logger
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.hub.policies import repository as repo
from qcdr_federation.hub.policies.issues import PolicySpecError
from qcdr_federation.hub.policies.metrics import ROLLOUT_RELEASES, ROLLOUT_ROLLBACKS, ROLLOUTS_HALTED
from qcdr_federation.hub.policies.models import FederatedPolicyRow, PolicyStatusRow
from qcdr_federation.hub.policies.placement import places_on
from qcdr_federation.hub.policies.sets import RENDER_CACHE, LivePolicy, render_error_message

log = get_logger("qcdr.federation.rollout")

# pg_try_advisory_xact_lock key of the rollout loop: "qcdr_ROL" in ASCII, fixed forever
ROLLOUT_LOCK_KEY = 0x716364725F524F4C
DEFAULT_INTERVAL_S = 5.0

ClusterPhase = Literal["waiting", "updating", "done", "failed"]
RolloutPhase = Literal["complete", "progressing", "halted", "rolled_back", "suspended"]


@dataclass(frozen=True)
class ClusterTimes:
    """What a cluster reported for a policy, with when the hub stored it."""

    generation: int
    state: str
    message: str | None
    reported_at: datetime


@dataclass(frozen=True)
class ClusterProgress:
    cluster_id: str
    cluster: str
    released_generation: int | None
    phase: ClusterPhase
    message: str | None = None


@dataclass(frozen=True)
class RolloutProgress:
    generation: int
    phase: RolloutPhase
    clusters: tuple[ClusterProgress, ...]
    to_release: tuple[str, ...]  # cluster ids to release the current generation to now
    on_failure: Literal["halt", "rollback"] = "halt"  # what the loop does when it is halted

    def count(self, phase: ClusterPhase) -> int:
        return sum(1 for c in self.clusters if c.phase == phase)


def gated(spec: FederatedPolicySpec, suspended: bool) -> bool:
    return suspended or (spec.rollout is not None and spec.rollout.strategy == "progressive")


def _settled(state: str, enforce: bool) -> bool:
    """The cluster did what the policy asks of it: applied, or (not enforced) proposed for approval."""
    if state == PolicyApplyState.APPLIED.value:
        return True
    return not enforce and state == PolicyApplyState.PROPOSED.value


def _phase_of(
    policy: LivePolicy,
    rollout: Rollout,
    released: tuple[int, datetime] | None,
    status: ClusterTimes | None,
    render_error: str | None,
    now: datetime,
) -> tuple[ClusterPhase, str | None]:
    if released is None or released[0] != policy.generation:
        return "waiting", None
    if render_error is not None:
        return "failed", render_error
    # what the cluster said about this generation (a report on an older one says nothing)
    said = status if status is not None and status.generation == policy.generation else None
    # a failure reported before this release is about an earlier try (the rollout was rolled back
    # and resumed): the cluster is trying again
    if said is not None and said.state == PolicyApplyState.FAILED.value and said.reported_at >= released[1]:
        return "failed", said.message
    if (
        said is not None
        and _settled(said.state, policy.spec.enforce)
        and (now - said.reported_at).total_seconds() >= rollout.min_success_time_s
    ):
        return "done", None
    deadline = rollout.progress_deadline_s
    if deadline is not None and (now - released[1]).total_seconds() > deadline:
        return "failed", f"not done within the progress deadline ({deadline} s)"
    return "updating", None


def assess(
    policy: LivePolicy,
    placed: Sequence[repo.LiveCluster],
    releases: Mapping[str, tuple[int, datetime]],
    statuses: Mapping[str, ClusterTimes],
    now: datetime,
    *,
    suspended: bool = False,
    rolled_back: bool = False,
    render_errors: Mapping[str, str] | None = None,
) -> RolloutProgress:
    """Where a progressive rollout of ``policy``'s current generation stands over the clusters it
    is ``placed`` on (cluster ids for ``releases``, ``statuses`` and ``render_errors``), and which
    clusters to release it to now."""
    rollout = policy.spec.rollout or Rollout(strategy="progressive")
    rank = {name: i for i, name in enumerate(rollout.order)}
    ordered = sorted(placed, key=lambda c: (rank.get(c.name, len(rank)), c.name))
    errors = render_errors or {}
    clusters: list[ClusterProgress] = []
    for cluster in ordered:
        released = releases.get(cluster.id)
        phase, message = _phase_of(
            policy, rollout, released, statuses.get(cluster.id), errors.get(cluster.id), now
        )
        clusters.append(
            ClusterProgress(cluster.id, cluster.name, released[0] if released else None, phase, message)
        )

    def progress(phase: RolloutPhase, to_release: Sequence[str] = ()) -> RolloutProgress:
        return RolloutProgress(
            policy.generation, phase, tuple(clusters), tuple(to_release), rollout.on_failure
        )

    def count(phase: ClusterPhase) -> int:
        return sum(1 for c in clusters if c.phase == phase)

    if suspended:
        return progress("suspended")
    if rolled_back:
        return progress("rolled_back")
    if count("failed") > rollout.max_failures:
        return progress("halted")
    waiting = [c.cluster_id for c in clusters if c.phase == "waiting"]
    if not waiting and count("updating") == 0:
        return progress("complete")
    slots = max(0, rollout.concurrency(len(clusters)) - count("updating"))
    return progress("progressing", waiting[:slots])


# --------------------------------------------------------------------------- reading


async def _status_times(session: AsyncSession, policy_id: str) -> dict[str, ClusterTimes]:
    s = PolicyStatusRow
    rows = await session.execute(
        select(s.cluster_id, s.generation, s.state, s.message, s.reported_at).where(s.policy_id == policy_id)
    )
    return {str(c): ClusterTimes(int(g), str(st), m, at) for c, g, st, m, at in rows.all()}


def _render_errors(policy: LivePolicy, placed: Sequence[repo.LiveCluster]) -> dict[str, str]:
    errors = {}
    for cluster in placed:
        try:
            RENDER_CACHE.render(policy, cluster.name)
        except PolicySpecError as exc:
            errors[cluster.id] = render_error_message(policy, exc)
    return errors


async def progress_of(
    session: AsyncSession,
    row: FederatedPolicyRow,
    now: datetime,
    clusters: Sequence[repo.LiveCluster] | None = None,
) -> RolloutProgress | None:
    """The rollout of a live policy, None when it is not gated (every cluster gets it at once).
    ``clusters``: the live clusters, when the caller already read them for several policies."""
    policy = LivePolicy.parse(row.id, row.name, row.generation, row.spec)
    suspended = row.suspended_at is not None
    if policy is None or not gated(policy.spec, suspended):
        return None
    if clusters is None:
        clusters = await repo.live_clusters(session)
    releases = await repo.releases_of(session, policy.id)
    # frozen (suspended): clusters keep their releases even off the placement, so count those too
    placed = [
        c for c in clusters if places_on(policy.spec, c.name, c.labels) or (suspended and c.id in releases)
    ]
    return assess(
        policy,
        placed,
        releases,
        await _status_times(session, policy.id),
        now,
        suspended=suspended,
        rolled_back=row.rolled_back_generation == row.generation,
        render_errors=_render_errors(policy, placed),
    )


# --------------------------------------------------------------------------- writing


async def snapshot_releases(session: AsyncSession, row: FederatedPolicyRow) -> None:
    """Record what every cluster gets of ``row`` now, before it becomes gated (a rollout turned on,
    or a suspension): without this the clusters would lose it. Releases left over from an earlier
    gated period are replaced."""
    policy = LivePolicy.parse(row.id, row.name, row.generation, row.spec)
    await session.execute(delete(repo.R).where(repo.R.policy_id == row.id))
    if policy is None:
        return
    clusters = await repo.live_clusters(session)
    now = datetime.now(UTC)
    await repo.release(
        session,
        row.id,
        {c.id: row.generation for c in clusters if places_on(policy.spec, c.name, c.labels)},
        now,
    )


async def suspend(
    session: AsyncSession, policy_id: str, actor: str, *, keep_current: bool = True
) -> FederatedPolicyRow | None:
    """Suspend a live policy (None: no such policy). Suspending twice changes nothing.
    ``keep_current``: every cluster keeps what it is served now; False for a policy created in
    this transaction, which no cluster has yet (a policy created suspended reaches nobody)."""
    row = await repo.get(session, policy_id, for_update=True)
    if row is None or row.suspended_at is not None:
        return row
    policy = LivePolicy.parse(row.id, row.name, row.generation, row.spec)
    if keep_current and policy is not None and not gated(policy.spec, suspended=False):
        await snapshot_releases(session, row)
    row.suspended_at = datetime.now(UTC)
    row.suspended_by = actor
    await session.flush()
    log.info("federation_policy_suspended", policy_id=row.id, name=row.name, actor=actor)
    return row


async def resume(session: AsyncSession, policy_id: str, actor: str) -> FederatedPolicyRow | None:
    """Resume a suspended or rolled-back policy: a progressive rollout goes on (a rolled-back one
    starts over), otherwise every placed cluster gets the current generation at once. None: no such
    policy."""
    row = await repo.get(session, policy_id, for_update=True)
    if row is None or (row.suspended_at is None and row.rolled_back_generation is None):
        return row
    row.suspended_at = None
    row.suspended_by = None
    row.rolled_back_generation = None
    await session.flush()
    log.info("federation_policy_resumed", policy_id=row.id, name=row.name, actor=actor)
    return row


async def advance(session: AsyncSession, now: datetime | None = None) -> int:
    """One pass over the progressive rollouts: release the current generation to the clusters
    :func:`assess` names. Only the replica holding the lock writes; the clusters released."""
    locked = await session.scalar(select(func.pg_try_advisory_xact_lock(ROLLOUT_LOCK_KEY)))
    if not locked:
        # another replica moves the rollouts and reports the halted ones: a sum over replicas
        # stays right when the lock moves
        ROLLOUTS_HALTED.set(0)
        return 0
    now = now or datetime.now(UTC)
    released = halted = 0
    clusters: list[repo.LiveCluster] | None = None
    for policy_id, suspended in await repo.gated_heads(session):
        if suspended:
            continue
        row = await repo.get(session, policy_id)
        if row is None:
            continue
        if clusters is None:
            clusters = await repo.live_clusters(session)
        progress = await progress_of(session, row, now, clusters)
        if progress is not None and progress.phase == "halted":
            if progress.on_failure == "rollback":
                released += len(await roll_back(session, row, progress, now))
                continue
            halted += 1
        if progress is None or not progress.to_release:
            continue
        await repo.release(session, policy_id, dict.fromkeys(progress.to_release, row.generation), now)
        released += len(progress.to_release)
        ROLLOUT_RELEASES.inc(len(progress.to_release))
        names = [c.cluster for c in progress.clusters if c.cluster_id in progress.to_release]
        log.info(
            "federation_rollout_released",
            policy_id=policy_id,
            name=row.name,
            generation=row.generation,
            clusters=names,
        )
    await session.flush()
    ROLLOUTS_HALTED.set(halted)
    return released


async def roll_back(
    session: AsyncSession, row: FederatedPolicyRow, progress: RolloutProgress, now: datetime
) -> list[str]:
    """Give the clusters that got ``row``'s failing generation the one they had before (or take the
    policy away where they had none), and stop the rollout; the cluster ids changed."""
    changed = await repo.roll_back_releases(session, row.id, row.generation, now)
    row.rolled_back_generation = row.generation
    await session.flush()
    ROLLOUT_ROLLBACKS.inc()
    failed = [c.cluster for c in progress.clusters if c.phase == "failed"]
    names = [c.cluster for c in progress.clusters if c.cluster_id in changed]
    log.warning(
        "federation_rollout_rolled_back",
        policy_id=row.id,
        name=row.name,
        generation=row.generation,
        failed=failed,
        clusters=names,
    )
    return changed


class RolloutLoop:
    """Runs :func:`advance` every ``interval_s``; ``on_released`` (the placements' refresh and the
    word to the other replicas) after a pass that released something."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_released: Callable[[], Awaitable[None]],
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._sessions = sessions
        self._on_released = on_released
        self.interval_s = interval_s

    async def once(self) -> int:
        async with self._sessions() as session:
            released = await advance(session)
            await session.commit()
        if released:
            await self._on_released()
        return released

    async def run(self, stop: asyncio.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                await self.once()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again next round
                if not failing:
                    log.warning("federation_rollout_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

"""Pulling the policies the hub placed on this spoke, and handing them to the local response service.

A long poll (``If-None-Match`` + ``wait``) costs nothing while the set is unchanged. A new set is
diffed with the last good one kept in the database and, in one transaction, stored with its ETag
while ``federation.policy_placed`` (new, or generation / content hash changed) and
``federation.policy_removed`` (gone) envelopes go into the outbox for ``federation:policies``.
While the hub is unreachable nothing changes here (the last good set stands); after a restart the
stored ETag makes the first pull a catch-up.

Every replica of the spoke pulls. A set is stored only when the stored one did not change while
the hub was asked (same ETag and set number): the hub served the answer after the stored set, so
it is at least as new. Otherwise another replica stored a set meanwhile, maybe a newer one than
this answer, which is dropped and asked again from the stored ETag. Generations alone cannot say
which set is newer: a rollout that rolls back gives clusters a lower generation again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from qcdr_common.contracts.federation.v1 import (
    POLICIES_STREAM,
    POLICY_PLACED,
    POLICY_REMOVED,
    PlacedPolicy,
    PlacedPolicySet,
    PolicyPlaced,
    PolicyRemoved,
)
from qcdr_common.logging import get_logger
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.streams.outbox import enqueue
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.backoff import Backoff, StoppedError, sleep_unless_stopped, unless_stopped
from qcdr_federation.db.base import OUTBOX
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import HubClient, HubError
from qcdr_federation.spoke.metrics import SYNCS
from qcdr_federation.spoke.models import SpokePolicyRow, SpokeStateRow
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import AgentState, utcnow

log = get_logger(__name__)

SOURCE = "federation"


@dataclass
class SetChanges:
    placed: list[PlacedPolicy] = field(default_factory=list)
    removed: list[SpokePolicyRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.placed or self.removed)


def diff(held: dict[str, SpokePolicyRow], placed: PlacedPolicySet) -> SetChanges:
    """What to publish: policies new or changed (generation or content hash), and those gone.

    A policy whose manifest identity (kind, namespace, name) changed is also *removed* under its
    old identity: the response service knows policies by that identity, so the old object would
    otherwise stay behind."""
    changes = SetChanges()
    now_ids = set()
    for policy in placed.policies:
        now_ids.add(policy.policy_id)
        old = held.get(policy.policy_id)
        if old is None or old.generation != policy.generation or old.content_hash != policy.content_hash:
            changes.placed.append(policy)
            if old is not None and _identity(old) != repo.manifest_identity(policy.manifest)[1:]:
                changes.removed.append(old)
    changes.removed.extend(row for pid, row in held.items() if pid not in now_ids)
    return changes


def _identity(row: SpokePolicyRow) -> tuple[str, str | None, str]:
    return row.kind, row.namespace, row.manifest_name


def placed_envelope(
    policy: PlacedPolicy, cluster: str, cluster_id: str, at: datetime, sequence: int | None = None
) -> Envelope:
    payload = PolicyPlaced(**policy.model_dump(), cluster=cluster, sequence=sequence)
    return new_envelope(POLICY_PLACED, payload, source=SOURCE, cluster_id=cluster_id, occurred_at=at)


def removed_envelope(
    row: SpokePolicyRow, cluster: str, cluster_id: str, at: datetime, sequence: int | None = None
) -> Envelope:
    payload = PolicyRemoved(
        sequence=sequence,
        policy_id=row.policy_id,
        name=row.name,
        cluster=cluster,
        api_version=row.api_version,
        kind=row.kind,
        namespace=row.namespace,
        manifest_name=row.manifest_name,
    )
    return new_envelope(POLICY_REMOVED, payload, source=SOURCE, cluster_id=cluster_id, occurred_at=at)


async def apply_placed_set(
    session: AsyncSession, placed: PlacedPolicySet, etag: str, *, cluster_id: str
) -> SetChanges:
    """Store ``placed`` as the last good set (with ``etag``) and enqueue what changed; the caller
    commits, so the set, the etag and the envelopes land together or not at all."""
    now = utcnow()
    state = await repo.get_state(session, for_update=True)  # one writer at a time (two replicas)
    held = await repo.held_policies(session, for_update=True)
    changes = diff(held, placed)
    envelopes: list[Envelope] = []
    # the set's number, under the state row's lock: the response service's replicas may handle
    # these envelopes in another order (a dead replica's entries come back later), and by the
    # number they tell a stale placement from a removal that came after it
    sequence = None
    if state is not None and changes:
        state.policy_sequence += 1
        sequence = state.policy_sequence
    # removals first: a policy that moved to another identity is removed, then placed anew
    for row in changes.removed:
        envelopes.append(removed_envelope(row, placed.cluster, cluster_id, now, sequence))
    for policy in changes.placed:
        envelopes.append(placed_envelope(policy, placed.cluster, cluster_id, now, sequence))
    gone = {row.policy_id for row in changes.removed} - {p.policy_id for p in placed.policies}
    await repo.delete_policies(session, gone)
    await repo.upsert_policies(session, changes.placed, now)
    await repo.set_pending(session, changes.placed, now)
    await repo.set_policies_etag(session, etag)
    await enqueue(session, OUTBOX, POLICIES_STREAM, envelopes)
    return changes


def _position(state: SpokeStateRow | None) -> tuple[str | None, int]:
    """Which set is stored: its ETag and its number (every set that changed something takes one;
    together they tell a set stored meanwhile even when its ETag is one seen before)."""
    return (state.policies_etag, state.policy_sequence) if state is not None else (None, 0)


class PolicyPuller:
    def __init__(
        self,
        settings: FederationSettings,
        sessions: async_sessionmaker[AsyncSession],
        client: HubClient,
        registrar: Registrar,
        state: AgentState,
        notify: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.registrar = registrar
        self.state = state
        self.notify = notify  # wakes the outbox relay
        self.wait_s = settings.long_poll_max_s

    async def _stored(self) -> tuple[str | None, int]:
        async with self.sessions() as session:
            return _position(await repo.get_state(session))

    async def _stored_etag(self) -> str | None:
        return (await self._stored())[0]

    async def pull_once(
        self, etag: str | None, wait_s: float, stop: asyncio.Event | None = None
    ) -> str | None:
        """One pull; returns the ETag to send next. Raises HubError when the hub does not answer,
        :class:`StoppedError` when ``stop`` is set while the hub holds the request."""
        before = await self._stored()  # what is stored as the hub is asked
        call = self.client.policies(etag, wait_s)
        result = await (unless_stopped(call, stop) if stop is not None else call)
        self.state.contact_ok()
        if result is None:
            SYNCS.labels(outcome="unchanged").inc()
            return etag
        placed, new_etag = result
        async with self.sessions() as session:
            state = await repo.get_state(session, for_update=True)  # apply_placed_set's lock, taken first
            now_stored = _position(state)
            if now_stored != before and now_stored[0] != new_etag:  # the same ETag: the same set
                # another replica stored a set while this one waited for the hub: its set may be
                # newer than this answer (a slower one), and storing this one would roll it back
                await session.rollback()
                SYNCS.labels(outcome="superseded").inc()
                log.info("federation_policies_superseded", etag=new_etag[:80], stored=str(now_stored[0])[:80])
                return now_stored[0]
            changes = await apply_placed_set(session, placed, new_etag, cluster_id=self.settings.cluster_id)
            await session.commit()
        SYNCS.labels(outcome="changed").inc()
        self.state.counts["policy_sets_received"] += 1
        if changes:
            self.notify()
            log.info(
                "federation_policies_changed",
                placed=[f"{p.name}@{p.generation}" for p in changes.placed],
                removed=[r.name for r in changes.removed],
                held=len(placed.policies),
            )
        return new_etag

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.retry_max_s)
        etag: str | None = None
        loaded = False
        while not stop.is_set():
            if not await self.registrar.wait_ready(stop):
                return
            try:
                if not loaded:
                    etag = await self._stored_etag()
                    loaded = True
                etag = await self.pull_once(etag, self.wait_s, stop)
                backoff.reset()
            except StoppedError:
                return
            except HubError as exc:
                SYNCS.labels(outcome="failed").inc()
                self.registrar.failed(exc)
                log.warning("federation_policy_pull_failed", error=exc.describe())
                if await sleep_unless_stopped(stop, backoff.next_delay()):
                    return
            except Exception as exc:  # the database away: keep the last good set, try again
                SYNCS.labels(outcome="failed").inc()
                log.exception("federation_policy_pull_error", error=repr(exc))
                loaded = False
                if await sleep_unless_stopped(stop, backoff.next_delay()):
                    return

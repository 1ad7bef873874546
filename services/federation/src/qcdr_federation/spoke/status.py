"""From the local response service's events to the hub's per-policy apply status.

The response service emits ``response.policy_changed`` / ``response.policy_status_changed`` (and
``response.policy_rejected`` when it cannot carry a placed policy out) on ``response:events``;
payloads of federated policies carry ``federation: {policy_id, generation, content_hash}``. A
consumer (group ``federation``) turns them into ``federation_spoke_policy_status`` rows — only for
the generation this spoke holds, so a late event about an older generation changes nothing — and a
reporter posts the unreported rows to the hub (``POST /federation/v1/status``); every heartbeat
carries the full list as well. Payloads are read as plain dicts: services never import each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from qcdr_common.contracts.federation.v1 import PolicyApplyState, PolicyApplyStatus, StatusReport
from qcdr_common.logging import get_logger
from qcdr_common.streams.consumer import Delivery
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.runner import wait_any
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.backoff import (
    Backoff,
    StoppedError,
    sleep_unless_stopped,
    unless_stopped,
)
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import HubClient, HubError
from qcdr_federation.spoke.models import SpokePolicyStatusRow
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import AgentState, utcnow

log = get_logger(__name__)

RESPONSE_EVENTS = "response:events"
GROUP = "federation"
POLICY_CHANGED = "response.policy_changed"
POLICY_STATUS_CHANGED = "response.policy_status_changed"
POLICY_REJECTED = "response.policy_rejected"
HANDLED_TYPES = frozenset({POLICY_CHANGED, POLICY_STATUS_CHANGED, POLICY_REJECTED})

# the response service's policy statuses → what the hub is told
_STATES: Mapping[str, PolicyApplyState] = {
    "proposed": PolicyApplyState.PROPOSED,
    "approved": PolicyApplyState.APPROVED,
    "applied": PolicyApplyState.APPLIED,
    "revoked": PolicyApplyState.REVOKED,
    "rejected": PolicyApplyState.FAILED,
    "failed": PolicyApplyState.FAILED,
}
MAX_MESSAGE = 2000
REPORT_BATCH = 1000
_REPORT_EVERY_S = 5.0


@dataclass(frozen=True)
class StatusUpdate:
    policy_id: str
    generation: int
    content_hash: str | None
    state: PolicyApplyState
    message: str | None
    observed_at: datetime


def status_update(envelope: Envelope) -> StatusUpdate | None:
    """The apply status an event says, or None for events about non-federated policies (and
    anything that does not parse: this consumer only listens in on the response service)."""
    if envelope.type not in HANDLED_TYPES:
        return None
    payload = envelope.payload
    federation = payload.get("federation")
    if not isinstance(federation, Mapping):
        return None
    policy_id = federation.get("policy_id")
    generation = federation.get("generation")
    if not isinstance(policy_id, str) or not isinstance(generation, int) or isinstance(generation, bool):
        return None
    content_hash = federation.get("content_hash")
    reason = payload.get("reason")
    message = str(reason)[:MAX_MESSAGE] if reason else None
    if envelope.type == POLICY_REJECTED:
        state = PolicyApplyState.FAILED
    else:
        raw = payload.get("to_status") if envelope.type == POLICY_STATUS_CHANGED else payload.get("status")
        mapped = _STATES.get(str(raw)) if raw is not None else None
        if mapped is None:
            log.info("federation_status_unknown", status=raw, policy_id=policy_id)
            return None
        state = mapped
    return StatusUpdate(
        policy_id=policy_id,
        generation=generation,
        content_hash=str(content_hash) if isinstance(content_hash, str) else None,
        state=state,
        message=message,
        observed_at=envelope.occurred_at,
    )


async def record_update(session: AsyncSession, update: StatusUpdate) -> bool:
    """Store ``update`` if it is about the held generation and not older than what is stored."""
    held = await repo.held_policy(session, update.policy_id)
    if held is None or held.generation != update.generation:
        return False
    if update.content_hash is not None and update.content_hash != held.content_hash:
        return False
    row = await repo.status_for_update(session, update.policy_id)
    if row is None:
        row = SpokePolicyStatusRow(
            policy_id=update.policy_id,
            generation=held.generation,
            content_hash=held.content_hash,
            state=update.state.value,
            message=update.message,
            observed_at=update.observed_at,
            reported_at=None,
        )
        session.add(row)
    else:
        same_generation = row.generation == held.generation and row.content_hash == held.content_hash
        if same_generation and row.observed_at > update.observed_at:
            return False  # a redelivered or late event: the stored status is newer
        if same_generation and row.state == update.state.value and row.message == update.message:
            return False
        row.generation = held.generation
        row.content_hash = held.content_hash
        row.state = update.state.value
        row.message = update.message
        row.observed_at = max(update.observed_at, row.observed_at)
        row.reported_at = None
    await session.flush()
    return True


def to_apply_status(row: SpokePolicyStatusRow) -> PolicyApplyStatus:
    return PolicyApplyStatus(
        policy_id=row.policy_id,
        generation=row.generation,
        content_hash=row.content_hash,
        state=PolicyApplyState(row.state),
        message=row.message[:MAX_MESSAGE] if row.message else None,
        observed_at=row.observed_at,
    )


class StatusTracker:
    """The consumer's handler and the reporter loop."""

    def __init__(
        self,
        settings: FederationSettings,
        sessions: async_sessionmaker[AsyncSession],
        client: HubClient,
        registrar: Registrar,
        state: AgentState,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.registrar = registrar
        self.state = state
        self._wake = asyncio.Event()

    async def handle(self, deliveries: list[Delivery]) -> None:
        updates = [u for u in (status_update(d.envelope) for d in deliveries) if u is not None]
        if not updates:
            return
        changed = 0
        async with self.sessions() as session:
            for update in updates:  # in stream order: the last word about a policy wins
                changed += await record_update(session, update)
            await session.commit()
        if changed:
            self.state.counts["status_changes"] += changed
            self._wake.set()

    async def report_once(self) -> int:
        """Post the unreported statuses; returns how many. Raises HubError."""
        async with self.sessions() as session:
            rows = await repo.unreported(session, REPORT_BATCH)
        if not rows:
            return 0
        await self.client.report_status(StatusReport(policies=tuple(to_apply_status(r) for r in rows)))
        self.state.contact_ok()
        await self.mark_reported(rows)
        return len(rows)

    async def mark_reported(self, rows: Sequence[SpokePolicyStatusRow]) -> None:
        async with self.sessions() as session:
            await repo.mark_reported(
                session, [(r.policy_id, r.generation, r.observed_at) for r in rows], utcnow()
            )
            await session.commit()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.retry_max_s)
        while not stop.is_set():
            if not await self.registrar.wait_ready(stop):
                return
            self._wake.clear()
            try:
                sent = await unless_stopped(self.report_once(), stop)
                backoff.reset()
                if sent == REPORT_BATCH:
                    continue
            except StoppedError:
                return
            except HubError as exc:
                self.registrar.failed(exc)
                log.warning("federation_status_report_failed", error=exc.describe())
                if await sleep_unless_stopped(stop, backoff.next_delay()):
                    return
                continue
            except Exception as exc:
                log.exception("federation_status_report_error", error=repr(exc))
                if await sleep_unless_stopped(stop, backoff.next_delay()):
                    return
                continue
            await wait_any(stop, self._wake, seconds=_REPORT_EVERY_S)

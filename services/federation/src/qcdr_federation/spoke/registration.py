"""The spoke's credential over its life: registration with a bootstrap token when it has none,
rotation when the hub asks or the credential gets old, and dropping it when the hub refuses it
(a 401: revoked, expired, cluster removed), after which it registers again as soon as a (new)
bootstrap token is there — the token file is read again on every attempt, so an operator only
has to update the Secret.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta

from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import RegisterRequest, RegisterResponse
from qcdr_common.logging import get_logger
from qcdr_common.streams.runner import wait_any
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.backoff import Backoff, sleep_unless_stopped
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import Credential, HubClient, HubError, HubErrorKind, agent_version
from qcdr_federation.spoke.models import SpokeStateRow
from qcdr_federation.spoke.runtime import REGISTRATION, AgentState, utcnow

log = get_logger(__name__)

# how often a registered agent looks at the credential's age (and how soon after a rotation fails)
_AGE_CHECK_S = 60.0


def read_bootstrap_token(settings: FederationSettings) -> SecretStr | None:
    """The token file (read now: a mounted Secret may have changed), else the token setting."""
    if settings.bootstrap_token_file is not None:
        try:
            text = settings.bootstrap_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            log.warning(
                "federation_bootstrap_token_unreadable",
                path=str(settings.bootstrap_token_file),
                error=exc.strerror,
            )
        else:
            if text:
                return SecretStr(text)
    if settings.bootstrap_token is not None and settings.bootstrap_token.get_secret_value().strip():
        return SecretStr(settings.bootstrap_token.get_secret_value().strip())
    return None


class Registrar:
    """Owns ``client.credential``; the other loops wait for :meth:`wait_ready` and report 401s
    through :meth:`invalidate`."""

    def __init__(
        self,
        settings: FederationSettings,
        sessions: async_sessionmaker[AsyncSession],
        client: HubClient,
        state: AgentState,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.state = state
        self.ready = asyncio.Event()
        self.loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._rotate_requested = False
        self._issued_at = utcnow()
        self._dropped: set[str] = set()  # credential ids refused by the hub, not yet forgotten in the DB
        # ids the hub refused lately: never adopted back from the shared row (a bound, not a log)
        self._refused: deque[str] = deque(maxlen=16)
        self._max_age = timedelta(seconds=settings.credential_max_age_s)

    # ------------------------------------------------------------------ for the other loops

    async def wait_ready(self, stop: asyncio.Event) -> bool:
        """Wait until a credential is in hand; False when the agent stops first."""
        while not self.ready.is_set():
            if stop.is_set():
                return False
            waiter = asyncio.ensure_future(self.ready.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
        return not stop.is_set()

    def invalidate(self, error: HubError) -> None:
        """A call was refused with 401: drop that credential (if it is still the one in hand)."""
        current = self.client.credential
        if current is None or error.credential_id is None or current.credential_id != error.credential_id:
            return  # already replaced (a rotation or a new registration raced the call)
        log.warning(
            "federation_credential_refused",
            credential_id=current.credential_id,
            reason=error.reason,
            detail=str(error),
            hint="registering again once a (new) bootstrap token is available",
        )
        self.client.credential = None
        self.ready.clear()
        self.state.registered = False
        self.state.set_problem(REGISTRATION, f"hub refused the credential ({error.reason or error.status})")
        self._dropped.add(current.credential_id)
        self._refused.append(current.credential_id)
        self._wake.set()

    def failed(self, exc: HubError) -> None:
        """Book a failed hub call: contact lost (or not), and a 401 drops the credential it carried."""
        if exc.kind is HubErrorKind.UNAUTHORIZED and exc.status is None:
            return  # no call was made: the credential was dropped meanwhile (the loop waits for a new one)
        self.state.contact_failed(exc)
        if exc.kind is HubErrorKind.UNAUTHORIZED:
            self.invalidate(exc)

    def request_rotation(self) -> None:
        if not self._rotate_requested:
            log.info("federation_credential_rotation_requested")
        self._rotate_requested = True
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def load(self) -> None:
        """Take the stored credential, if the stored registration is for this hub and name."""
        async with self.sessions() as session:
            row, reset = await repo.ensure_state(session, self.state.cluster_name, self.state.hub_url)
            await session.commit()
        if reset:
            log.warning(
                "federation_spoke_state_reset",
                hint="the stored registration was for another hub or cluster name; registering again",
            )
        self.state.last_contact_at = row.last_contact_at
        if self._hold(row):
            log.info("federation_spoke_resumed", cluster_id=row.cluster_id, credential_id=row.credential_id)
        else:
            self.state.cluster_id = row.cluster_id
        self.loaded.set()

    def _hold(self, row: SpokeStateRow) -> bool:
        """Take the stored credential in hand, unless there is none or the hub refused it lately."""
        if not row.credential or not row.credential_id or row.credential_id in self._refused:
            return False
        self.client.credential = Credential(row.credential_id, SecretStr(row.credential))
        self._issued_at = row.credential_issued_at or row.registered_at or utcnow()
        self.state.cluster_id = row.cluster_id
        self.state.registered = True
        self.ready.set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.retry_max_s)
        while not stop.is_set():
            try:
                if not self.loaded.is_set():
                    await self.load()
                    backoff.reset()
                    continue
                await self._forget_dropped()
                if not self.ready.is_set():
                    if await self._adopt_stored():
                        backoff.reset()
                        continue
                    if await self._register():
                        backoff.reset()
                    elif await sleep_unless_stopped(stop, backoff.next_delay()):
                        return
                    continue
                if self._rotate_requested or utcnow() - self._issued_at >= self._max_age:
                    if await self._rotate():
                        backoff.reset()
                    elif await sleep_unless_stopped(stop, backoff.next_delay()):
                        return
                    continue
                self._wake.clear()
                remaining = (self._issued_at + self._max_age - utcnow()).total_seconds()
                await wait_any(stop, self._wake, seconds=min(_AGE_CHECK_S, remaining))
            except Exception as exc:  # the database away: try again after a pause
                log.exception("federation_registrar_error", error=repr(exc))
                if await sleep_unless_stopped(stop, backoff.next_delay()):
                    return

    async def _adopt_stored(self) -> bool:
        """Take a credential another replica of this spoke stored (it rotated, or registered)
        since this one loaded: the replicas share the state row, and without this a replica
        whose old credential the hub stopped accepting would try the single-use bootstrap token
        for ever, with a good credential in the database."""
        async with self.sessions() as session:
            row, _ = await repo.ensure_state(session, self.state.cluster_name, self.state.hub_url)
            await session.commit()
        if not self._hold(row):
            return False
        self._rotate_requested = False  # the other replica's rotation answered it
        self.state.clear_problem(REGISTRATION)
        log.info("federation_credential_adopted", credential_id=row.credential_id)
        return True

    async def _forget_dropped(self) -> None:
        for credential_id in list(self._dropped):
            async with self.sessions() as session:
                await repo.drop_credential(session, credential_id, "hub refused the credential (401)")
                await session.commit()
            self._dropped.discard(credential_id)

    async def _register(self) -> bool:
        token = read_bootstrap_token(self.settings)
        if token is None:
            self.state.set_problem(
                REGISTRATION,
                "not registered: no bootstrap token (QCDR_FEDERATION_BOOTSTRAP_TOKEN or _FILE)",
            )
            log.warning(
                "federation_register_waiting", reason="no_bootstrap_token", cluster=self.state.cluster_name
            )
            return False
        request = RegisterRequest(
            cluster_name=self.state.cluster_name,
            bootstrap_token=token,
            labels=dict(self.settings.cluster_labels),
            version=agent_version(),
        )
        try:
            answer = await self.client.register(request)
        except HubError as exc:
            self._failed("federation_register_failed", exc)
            return False
        await self._store(answer, registered=True)
        log.info(
            "federation_spoke_registered",
            cluster=answer.cluster_name,
            cluster_id=answer.cluster_id,
            credential_id=answer.credential_id,
        )
        return True

    async def _rotate(self) -> bool:
        try:
            answer = await self.client.rotate()
        except HubError as exc:
            if exc.kind is HubErrorKind.UNAUTHORIZED:
                self.invalidate(exc)
            self._failed("federation_rotation_failed", exc)
            return False
        await self._store(answer, registered=False)
        log.info("federation_credential_rotated", credential_id=answer.credential_id)
        return True

    def _failed(self, event: str, exc: HubError) -> None:
        self.state.contact_failed(exc)
        if exc.kind is not HubErrorKind.UNREACHABLE and exc.kind is not HubErrorKind.SERVER:
            self.state.set_problem(REGISTRATION, f"registration failed: {exc.describe()}")
        log.warning(event, kind=exc.kind.value, status=exc.status, reason=exc.reason, detail=str(exc))

    async def _store(self, answer: RegisterResponse, *, registered: bool) -> None:
        issued = utcnow()
        secret = answer.credential.get_secret_value()
        # stored before it is used: a crash right after still leaves a working credential
        async with self.sessions() as session:
            await repo.store_credential(
                session,
                cluster_id=answer.cluster_id,
                credential_id=answer.credential_id,
                credential=secret,
                issued_at=issued,
                registered=registered,
            )
            await session.commit()
        self.client.credential = Credential(answer.credential_id, SecretStr(secret))
        self._issued_at = issued
        self._rotate_requested = False  # a new credential, whichever way it came, is what was asked for
        self._dropped.clear()
        self.state.contact_ok()
        self.state.cluster_id = answer.cluster_id
        self.state.registered = True
        self.state.take_heartbeat_interval(answer.heartbeat_interval_s)
        self.state.clear_problem(REGISTRATION)
        self.ready.set()

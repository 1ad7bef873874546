"""Running the hub users' commands: a long poll on ``GET /federation/v1/commands`` returns as soon
as one is pending; each is carried out against the local response API (approve / reject / undo
with the reason as the note, renew with the lease) and its answer — status code and body, or 503
when the response API does not answer — goes back as the command's result.

A command the hub hands out again (its result did not arrive: the replica that ran it died, or
the hub was away) is not run twice, whichever replica gets it: the replica that takes a command on
claims it in the spoke's database and stores its result there, and a replica given a command
already answered posts the stored result. A command another replica is running right now is left
to it (the hub hands it out again if no result comes); one left unfinished past the response API's
timeout belonged to a replica that died and is run again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from qcdr_common.contracts.federation.v1 import CommandResult, SpokeCommand
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.backoff import Backoff, StoppedError, sleep_unless_stopped, unless_stopped
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import HubClient, HubError, HubErrorKind
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.response_api import ResponseApi
from qcdr_federation.spoke.runtime import AgentState

log = get_logger(__name__)

# a runner that has not stored its result this long after the response API's timeout is gone
_STALE_MARGIN_S = 5.0
# a result the hub refuses outright (404: the command expired or is unknown) is not sent again
_FINAL = frozenset({HubErrorKind.CLIENT})


class CommandRunner:
    def __init__(
        self,
        settings: FederationSettings,
        sessions: async_sessionmaker[AsyncSession],
        client: HubClient,
        response: ResponseApi,
        registrar: Registrar,
        state: AgentState,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.response = response
        self.registrar = registrar
        self.state = state
        self.wait_s = settings.long_poll_max_s
        self.stale_s = settings.http_timeout_s * 2 + _STALE_MARGIN_S

    async def execute(self, command: SpokeCommand) -> CommandResult | None:
        """The command's result: stored if a replica already ran it, else from the response API now;
        None while another replica is running it."""
        now = datetime.now(UTC)
        async with self.sessions() as session:
            await repo.prune_command_results(
                session, now - timedelta(seconds=self.settings.command_results_keep_s)
            )
            claim = await repo.claim_command(
                session, command.id, now=now, stale_before=now - timedelta(seconds=self.stale_s)
            )
            await session.commit()
        if not claim.mine:
            log.info(
                "federation_command_seen_before",
                command_id=command.id,
                answered=claim.result is not None,
            )
            return claim.result
        result = await self.response.run_command(command)
        log.info(
            "federation_command_run",
            command_id=command.id,
            kind=command.kind.value,
            action_id=command.action_id,
            requested_by=command.requested_by,
            status_code=result.status_code,
        )
        self.state.counts["commands_run"] += 1
        try:
            async with self.sessions() as session:
                await repo.record_command_result(session, command.id, result, datetime.now(UTC))
                await session.commit()
        except Exception as exc:  # the answer is in hand: post it anyway
            log.warning("federation_command_result_not_stored", command_id=command.id, error=repr(exc))
        return result

    async def deliver(self, command: SpokeCommand, result: CommandResult, stop: asyncio.Event) -> None:
        """Post the result, retrying while the hub is away (the hub user is waiting for it)."""
        backoff = Backoff(self.settings.retry_max_s)
        while not stop.is_set():
            try:
                await self.client.command_result(command.id, result)
                self.state.contact_ok()
                return
            except HubError as exc:
                self.registrar.failed(exc)
                if exc.kind in _FINAL:
                    log.warning(
                        "federation_command_result_refused", command_id=command.id, error=exc.describe()
                    )
                    return
                log.warning("federation_command_result_failed", command_id=command.id, error=exc.describe())
                if exc.kind is HubErrorKind.UNAUTHORIZED and not await self.registrar.wait_ready(stop):
                    return
            if await sleep_unless_stopped(stop, backoff.next_delay()):
                return

    async def poll_once(self, stop: asyncio.Event) -> int:
        """One long poll and the commands it brought; returns how many. Raises HubError, StoppedError."""
        commands = await unless_stopped(self.client.commands(self.wait_s), stop)
        self.state.contact_ok()
        for command in commands:
            result = await self.execute(command)
            if result is not None:
                await self.deliver(command, result, stop)
        return len(commands)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.retry_max_s)
        while not stop.is_set():
            if not await self.registrar.wait_ready(stop):
                return
            try:
                await self.poll_once(stop)
                backoff.reset()
            except StoppedError:
                return
            except HubError as exc:
                self.registrar.failed(exc)
                log.warning("federation_commands_poll_failed", error=exc.describe())
                if await sleep_unless_stopped(stop, backoff.next_delay()):
                    return
            except Exception as exc:
                log.exception("federation_commands_error", error=repr(exc))
                if await sleep_unless_stopped(stop, backoff.next_delay()):
                    return

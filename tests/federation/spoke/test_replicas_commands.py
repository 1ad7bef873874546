"""Two spoke replicas and the hub users' commands: the hub hands a command out again when its result
did not arrive (the replica that ran it died before posting it), and the replica that gets it then
posts the stored result instead of running it again (an approve would answer 409, a renew would
extend the lease twice). Found by the replicas audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qcdr_common.contracts.federation.v1 import CommandKind, CommandResult, SpokeCommand
from qcdr_common.db import make_session_factory
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.commands import CommandRunner
from qcdr_federation.spoke.models import SpokeCommandResultRow
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import AgentState
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.spoke.test_units import settings

pytestmark = [pytest.mark.db]


class ResponseApi:
    """The spoke's response API as far as commands go: a second approve of an action is a 409."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.approved: set[str] = set()
        self.hold: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def run_command(self, command: SpokeCommand) -> CommandResult:
        self.calls.append(command.id)
        self.called.set()
        if self.hold is not None:
            await self.hold.wait()
        if command.action_id in self.approved:
            return CommandResult(status_code=409, body={"reason": "illegal_transition"})
        self.approved.add(command.action_id)
        return CommandResult(status_code=200, body={"id": command.action_id, "state": "queued"})


class Hub:
    """Hands out the given commands on every poll and keeps the results posted."""

    def __init__(self, *commands: SpokeCommand) -> None:
        self.pending = list(commands)
        self.results: list[tuple[str, CommandResult]] = []

    async def commands(self, wait_s: float) -> list[SpokeCommand]:
        return list(self.pending)

    async def command_result(self, command_id: str, result: CommandResult) -> None:
        self.results.append((command_id, result))


def command(command_id: str = "cmd-1", action_id: str = "7") -> SpokeCommand:
    return SpokeCommand(
        id=command_id,
        kind=CommandKind.APPROVE,
        action_id=action_id,
        requested_by="alice",
        created_at=datetime.now(UTC),
    )


def replica(engine: AsyncEngine, response: ResponseApi, hub: Any = None, **overrides: Any) -> CommandRunner:
    s = settings(**overrides)
    sessions = make_session_factory(engine)
    state = AgentState.from_settings(s)
    hub = hub if hub is not None else Hub()
    runner = CommandRunner(s, sessions, hub, response, Registrar(s, sessions, hub, state), state)  # type: ignore[arg-type]
    return runner


async def test_a_command_another_replica_ran_is_answered_with_its_result(spoke_engine: AsyncEngine) -> None:
    response = ResponseApi()
    first = replica(spoke_engine, response)
    ran = await first.execute(command())
    assert ran == CommandResult(status_code=200, body={"id": "7", "state": "queued"})
    # the first replica dies before posting; the hub hands the command to the second
    hub = Hub(command())
    second = replica(spoke_engine, response, hub)
    assert await second.poll_once(asyncio.Event()) == 1
    assert response.calls == ["cmd-1"]  # not run again: no 409
    assert hub.results == [("cmd-1", ran)]
    assert second.state.counts["commands_run"] == 0
    # a different command on the same action does run (and gets the response API's own answer)
    again = await second.execute(command("cmd-2"))
    assert again is not None
    assert again.status_code == 409
    assert response.calls == ["cmd-1", "cmd-2"]


async def test_a_command_another_replica_is_running_is_left_to_it(spoke_engine: AsyncEngine) -> None:
    response = ResponseApi()
    response.hold = asyncio.Event()
    first = replica(spoke_engine, response)
    running = asyncio.create_task(first.execute(command()))
    await asyncio.wait_for(response.called.wait(), 30)
    hub = Hub(command())
    second = replica(spoke_engine, response, hub)
    assert await asyncio.wait_for(second.poll_once(asyncio.Event()), 30) == 1
    assert hub.results == []  # nothing posted: the first replica answers
    assert response.calls == ["cmd-1"]
    response.hold.set()
    result = await running
    assert result is not None
    assert result.status_code == 200
    # handed out once more (say the first died after storing): the stored answer goes back
    assert await second.poll_once(asyncio.Event()) == 1
    assert hub.results == [("cmd-1", result)]
    assert response.calls == ["cmd-1"]


async def test_a_command_left_unfinished_by_a_replica_that_died_runs_again(spoke_engine: AsyncEngine) -> None:
    response = ResponseApi()
    first = replica(spoke_engine, response, http_timeout_s=1.0)
    sessions = make_session_factory(spoke_engine)
    async with sessions() as session:  # the first replica took it on and died in the call
        claim = await repo.claim_command(
            session, "cmd-1", now=datetime.now(UTC), stale_before=datetime.now(UTC) - timedelta(seconds=60)
        )
        await session.commit()
    assert claim.mine
    assert await first.execute(command()) is None  # it may still be at it
    assert response.calls == []
    async with sessions() as session:  # longer ago than the response API's timeout allows
        await session.execute(
            update(SpokeCommandResultRow).values(
                started_at=datetime.now(UTC) - timedelta(seconds=first.stale_s + 1)
            )
        )
        await session.commit()
    result = await first.execute(command())
    assert result is not None
    assert result.status_code == 200
    assert response.calls == ["cmd-1"]
    async with sessions() as session:
        row = await session.get(SpokeCommandResultRow, "cmd-1")
    assert row is not None
    assert (row.status_code, row.body) == (200, {"id": "7", "state": "queued"})


async def test_results_are_forgotten_after_the_keep_time(spoke_engine: AsyncEngine) -> None:
    response = ResponseApi()
    runner = replica(spoke_engine, response, command_results_keep_s=3600)
    await runner.execute(command("old"))
    sessions = make_session_factory(spoke_engine)
    async with sessions() as session:
        await session.execute(
            update(SpokeCommandResultRow)
            .where(SpokeCommandResultRow.command_id == "old")
            .values(started_at=datetime.now(UTC) - timedelta(hours=2))
        )
        await session.commit()
    await runner.execute(command("new", action_id="8"))
    async with sessions() as session:
        kept = (await session.scalars(select(SpokeCommandResultRow.command_id))).all()
        count = await session.scalar(select(func.count()).select_from(SpokeCommandResultRow))
    assert kept == ["new"]
    assert count == 1

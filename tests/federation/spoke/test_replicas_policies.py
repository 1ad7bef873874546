"""Two spoke replicas pulling the placed policies on their own: an answer the hub gave before a set
another replica stored meanwhile is not stored over it (found by the second review: the held
policy went back a generation, and the old placement was published with a higher sequence, so the
response service took it as the newer one). A lower generation the hub serves later (a rollout
that rolled back) is still taken."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine

import httpx
import pytest
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import POLICY_PLACED, PlacedPolicySet
from qcdr_common.db import make_session_factory
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import Credential, HubClient
from qcdr_federation.spoke.policies import PolicyPuller
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import AgentState
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.federation.spoke.test_state import outbox_envelopes, placed_set, policy
from tests.federation.spoke.test_units import settings

pytestmark = [pytest.mark.db]

Sessions = async_sessionmaker[AsyncSession]
Hub = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)

GEN1 = placed_set(policy("p1", 1, "h1"), etag="e1")
GEN2 = placed_set(policy("p1", 2, "h2"), etag="e2")


def serving(placed: PlacedPolicySet) -> Hub:
    def hub(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=placed.model_dump_json(), headers={"ETag": f'"{placed.etag}"'})

    return hub


def answered_late(placed: PlacedPolicySet, arrives: asyncio.Event) -> Hub:
    """The hub's answer, written while ``placed`` was the set, reaching the replica once
    ``arrives`` is set."""
    body = placed.model_dump_json()

    async def hub(request: httpx.Request) -> httpx.Response:
        await arrives.wait()
        return httpx.Response(200, content=body, headers={"ETag": f'"{placed.etag}"'})

    return hub


class Replica:
    def __init__(self, sessions: Sessions, hub: Hub) -> None:
        s = settings()
        state = AgentState.from_settings(s)
        self.client = HubClient(s, transport=httpx.MockTransport(hub))
        self.client.credential = Credential("cid", SecretStr("cid.secret"))
        self.puller = PolicyPuller(
            s, sessions, self.client, Registrar(s, sessions, self.client, state), state, lambda: None
        )

    async def pull(self, etag: str | None = None) -> str | None:
        try:
            return await self.puller.pull_once(etag, 0)
        finally:
            await self.client.aclose()


async def ready(engine: AsyncEngine) -> Sessions:
    sessions = make_session_factory(engine)
    async with sessions() as session:
        await repo.ensure_state(session, "spoke-a", "http://hub.test")
        await session.commit()
    return sessions


async def held_generation(sessions: Sessions) -> int:
    async with sessions() as session:
        return (await repo.held_policies(session))["p1"].generation


async def placements(engine: AsyncEngine) -> list[tuple[int, int]]:
    """(generation, sequence) of every placement published, in order."""
    return [
        (e.payload["generation"], e.payload["sequence"])
        for _, e in await outbox_envelopes(engine)
        if e.type == POLICY_PLACED
    ]


async def test_an_older_answer_stored_late_does_not_roll_the_newer_set_back(
    spoke_engine: AsyncEngine,
) -> None:
    sessions = await ready(spoke_engine)
    arrives = asyncio.Event()
    slow = Replica(sessions, answered_late(GEN1, arrives))
    late = asyncio.create_task(slow.pull())
    await asyncio.sleep(0.1)  # the slow replica asked the hub while generation 1 was the set
    assert await Replica(sessions, serving(GEN2)).pull() == '"e2"'
    arrives.set()
    # dropped; the next pull asks from what is stored
    assert await late == '"e2"'
    assert await held_generation(sessions) == 2
    assert await placements(spoke_engine) == [(2, 1)]


async def test_an_answer_older_than_a_set_that_changed_and_came_back_is_dropped(
    spoke_engine: AsyncEngine,
) -> None:
    """The ETag is the set's content hash: while the slow replica waited, the stored set went on
    and came back to the ETag it had. The set's number tells it moved."""
    sessions = await ready(spoke_engine)
    assert await Replica(sessions, serving(GEN1)).pull() == '"e1"'
    arrives = asyncio.Event()
    slow = Replica(sessions, answered_late(GEN2, arrives))
    late = asyncio.create_task(slow.pull('"e1"'))
    await asyncio.sleep(0.1)
    assert await Replica(sessions, serving(GEN2)).pull('"e1"') == '"e2"'
    gen3 = placed_set(policy("p1", 3, "h3"), etag="e3")
    assert await Replica(sessions, serving(gen3)).pull('"e2"') == '"e3"'
    assert await Replica(sessions, serving(GEN1)).pull('"e3"') == '"e1"'  # a rollback to h1
    arrives.set()
    assert await late == '"e1"'
    assert await held_generation(sessions) == 1
    assert await placements(spoke_engine) == [(1, 1), (2, 2), (3, 3), (1, 4)]


async def test_a_lower_generation_the_hub_serves_later_is_taken(spoke_engine: AsyncEngine) -> None:
    """A progressive rollout with ``on_failure: rollback`` gives a cluster its previous generation
    back: a set is judged by when the hub served it, not by its generations."""
    sessions = await ready(spoke_engine)
    assert await Replica(sessions, serving(GEN2)).pull() == '"e2"'
    assert await Replica(sessions, serving(GEN1)).pull('"e2"') == '"e1"'
    assert await held_generation(sessions) == 1
    assert await placements(spoke_engine) == [(2, 1), (1, 2)]

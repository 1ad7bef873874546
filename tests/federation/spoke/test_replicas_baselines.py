"""Two spoke replicas fetching the hub's shared baselines: a page another replica already took (the
stored cursor moved on while this one waited for the hub) is not published twice, and the cursor
never moves back (found by the replicas audit). And a hub page that does not move the cursor ends
the fetch instead of being fetched and published for ever."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from qcdr_common.contracts.federation.v1 import SharedBaseline
from qcdr_common.db import make_session_factory
from qcdr_federation.db.base import OUTBOX
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.baselines import FETCH_LIMIT, BaselineSync
from qcdr_federation.spoke.client import BaselinePage
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import AgentState
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.spoke.test_units import settings

pytestmark = [pytest.mark.db]


def baseline(n: int) -> SharedBaseline:
    return SharedBaseline(
        profile_key=f"sha256:{n:064x}",
        source_cluster="spoke-b",
        generation=1,
        ready_at=datetime.now(UTC),
        data={"key": f"sha256:{n:064x}"},
    )


class Hub:
    """Two pages; while this replica waits for the first, the other replica takes it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = make_session_factory(engine)
        self.asked: list[str | None] = []

    async def fetch_baselines(self, after: str | None, limit: int) -> BaselinePage:
        self.asked.append(after)
        if after is None:
            async with self.sessions() as session:  # the other replica's commit of this page
                await repo.set_baselines_cursor(session, "c1")
                await session.commit()
            return BaselinePage(items=[baseline(1)], next="c1", more=True)
        assert after == "c1"
        return BaselinePage(items=[baseline(2)], next="c2", more=False)


async def test_a_page_another_replica_took_is_not_published_again(spoke_engine: AsyncEngine) -> None:
    s = settings()
    sessions = make_session_factory(spoke_engine)
    async with sessions() as session:
        await repo.ensure_state(session, s.cluster_name, s.hub_url)
        await session.commit()
    state = AgentState.from_settings(s)
    hub: Any = Hub(spoke_engine)
    sync = BaselineSync(s, sessions, hub, Registrar(s, sessions, hub, state), state, lambda: None)
    assert await sync.fetch() == 1  # only the second page: the first went out through the other
    assert hub.asked == [None, "c1"]
    async with sessions() as session:
        row = await repo.get_state(session)
        published = await session.scalar(select(func.count()).select_from(OUTBOX))
    assert row is not None
    assert row.baselines_cursor == "c2"
    assert published == 1


class StuckHub:
    """Always the same page after the cursor it is given."""

    def __init__(self, page: BaselinePage) -> None:
        self.page = page
        self.asked: list[str | None] = []

    async def fetch_baselines(self, after: str | None, limit: int) -> BaselinePage:
        self.asked.append(after)
        return self.page


@pytest.mark.parametrize(
    "page",
    [
        # says more follow, hands back the cursor it was given
        BaselinePage(items=[baseline(1), baseline(2)], next="c7", more=True),
        # an older hub: a full page (taken for "more"), no cursor
        BaselinePage(items=[baseline(i) for i in range(FETCH_LIMIT)], next=None, more=None),
    ],
    ids=["same-cursor-and-more", "full-page-without-cursor"],
)
async def test_a_page_that_does_not_move_the_cursor_ends_the_fetch(
    spoke_engine: AsyncEngine, page: BaselinePage
) -> None:
    """Asked again after it, the hub would answer the same page: the fetch looped for ever and
    published the page's baselines again on every turn. The page is taken once, the fetch ends,
    and the hub's fault is booked as a hub error (the status shows it)."""
    s = settings()
    sessions = make_session_factory(spoke_engine)
    async with sessions() as session:
        await repo.ensure_state(session, "spoke-a", "http://hub.test")
        await repo.set_baselines_cursor(session, "c7")
        await session.commit()
    state = AgentState.from_settings(s)
    hub: Any = StuckHub(page)
    sync = BaselineSync(s, sessions, hub, Registrar(s, sessions, hub, state), state, lambda: None)
    assert await asyncio.wait_for(sync.fetch(), timeout=10) == len(page.items)
    assert hub.asked == ["c7"]
    async with sessions() as session:
        row = await repo.get_state(session)
        published = await session.scalar(select(func.count()).select_from(OUTBOX))
    assert row is not None
    assert row.baselines_cursor == "c7"
    assert published == len(page.items)
    assert state.last_error is not None
    assert "does not move the cursor" in state.last_error

"""An output claim outlasted by its send: Splunk HEC with ``ack: true`` keeps a batch in ``send``
until HEC acknowledges it, up to ``ack_timeout_s`` (default 120 s), longer than the claim
(``timeout_s * 3 + 2``). The delivering replica extends the claim while it waits, so another
replica (or another of its ``concurrency`` slots) never claims the rows and posts them again
(found by the replicas audit: every event of a batch was indexed twice when indexing lagged).

Here ``timeout_s`` is 1 s (a claim of 5 s; shorter would risk a request timing out on a busy
machine) and acknowledgements come after 6.5 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.sinks.splunk_hec import SplunkHecServer, serve_splunk_hec
from qcdr_response.outputs.delivery import SinkDelivery
from qcdr_response.outputs.grouping import enqueue
from qcdr_response.outputs.sinks.splunk_hec import SplunkHecConfig, SplunkHecSink
from sqlalchemy import text

from tests.response.service.conftest import make_finding

pytestmark = [pytest.mark.db]

TOKEN = "5f2b3c4d-1111-4222-8333-944455566677"


@pytest.fixture
def hec() -> Iterator[SplunkHecServer]:
    with serve_splunk_hec(TOKEN, ack=True) as server:
        yield server


async def test_a_batch_waiting_for_its_ack_is_not_sent_again_by_another_replica(
    committed_db: str, hec: SplunkHecServer
) -> None:
    config = SplunkHecConfig.model_validate(
        {
            "name": "splunk",
            "url": hec.url,
            "token": TOKEN,
            "ack": True,
            "timeout_s": 1.0,
            "ack_timeout_s": 30.0,
            "ack_poll_interval_s": 0.2,
            "group_by": ["finding"],
        }
    )
    engine = make_engine(committed_db)
    sessions = make_session_factory(engine)
    replicas = [SinkDelivery(SplunkHecSink(config), sessions, poll_s=0.1) for _ in range(2)]
    stop = asyncio.Event()
    try:
        async with sessions.begin() as session:
            await enqueue(session, [config], [make_finding()], cluster_id="c", now=datetime.now(UTC))
        hec.withhold_acks()  # indexing lags: the first post is accepted, its ack comes later
        tasks = [asyncio.create_task(r.run(stop)) for r in replicas]
        await asyncio.sleep(6.5)
        hec.release_acks()

        async def delivered() -> bool:
            async with sessions() as session:
                state = await session.scalar(text("SELECT state FROM response_output_queue"))
            return state == "delivered"

        for _ in range(100):
            if await delivered():
                break
            await asyncio.sleep(0.1)
        assert await delivered()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        async with sessions() as session:
            attempts = await session.scalar(text("SELECT attempts FROM response_output_queue"))
    finally:
        stop.set()
        for r in replicas:
            await r.sink.aclose()
        await engine.dispose()

    # HEC accepted the first post: the message must have been posted once
    assert len(hec.events) == 1, f"{len(hec.events)} posts of one message ({attempts} attempts)"

"""The forwarder against a scripted hub (``httpx.MockTransport``): it waits out a hub that is away
instead of failing deliveries, fails only a batch the hub calls bad, counts items refused one by
one, filters by severity and splits batches; with a real consumer, stopping while the hub is away
leaves the entries pending rather than dead-lettered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import ForwardKind
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams.consumer import Delivery
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.streams.names import dlq_key, stream_key
from qcdr_common.streams.producer import publish
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke.client import Credential, HubClient
from qcdr_federation.spoke.forwarder import BatchRefusedError, Forwarder, StopForwarding
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import HUB_UNREACHABLE, AgentState
from redis.asyncio import Redis

from tests.federation.spoke.conftest import eventually, make_spoke_settings

Handler = Callable[[httpx.Request], httpx.Response]


def event(i: int, severity: str = "high") -> Envelope:
    payload = {
        "id": f"ev-{i}",
        "source": "tetragon",
        "category": "process_exec",
        "severity": severity,
        "event_time": datetime.now(UTC).isoformat(),
    }
    return new_envelope(
        "ingest.event_observed", payload, source="ingest", cluster_id="spoke-a", occurred_at=datetime.now(UTC)
    )


def deliveries(envelopes: list[Envelope]) -> list[Delivery]:
    return [Delivery(f"{i}-0", e, 1) for i, e in enumerate(envelopes)]


def make_forwarder(
    handler: Handler,
    stop: asyncio.Event,
    settings: FederationSettings | None = None,
    kind: ForwardKind = ForwardKind.EVENTS,
) -> tuple[Forwarder, AgentState]:
    settings = settings or make_spoke_settings(
        "postgresql+asyncpg://unused@127.0.0.1/unused", "redis://127.0.0.1", "p", "http://hub.test"
    )
    state = AgentState.from_settings(settings)
    client = HubClient(settings, transport=httpx.MockTransport(handler))
    client.credential = Credential("cid", SecretStr("cid.secret"))
    # the database is never reached: only 401s would write to it
    registrar = Registrar(
        settings, make_session_factory(make_engine(settings.database_url.get_secret_value())), client, state
    )
    registrar.ready.set()
    return Forwarder(kind, settings, client, registrar, state, stop), state


def ack(request: httpx.Request, rejected: list[dict[str, Any]] | None = None) -> httpx.Response:
    items = json.loads(request.content)["items"]
    rejected = rejected or []
    return httpx.Response(
        200, json={"accepted": len(items) - len(rejected), "duplicates": 0, "rejected": rejected}
    )


async def test_a_hub_that_is_away_is_waited_out() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(len(json.loads(request.content)["items"]))
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(attempts) == 2:
            return httpx.Response(503, json={"status": 503})
        if len(attempts) == 3:
            raise httpx.ReadTimeout("slow", request=request)  # the hub may have stored it: sent again
        return ack(request)

    forwarder, state = make_forwarder(handler, asyncio.Event())
    await asyncio.wait_for(forwarder.handle(deliveries([event(1), event(2)])), 10)
    assert attempts == [2, 2, 2, 2]
    assert state.counts["events_forwarded"] == 2
    assert state.hub_up
    assert HUB_UNREACHABLE not in state.problems


async def test_only_a_bad_batch_fails_and_refused_items_are_counted() -> None:
    forwarder, _ = make_forwarder(
        lambda r: httpx.Response(422, json={"status": 422, "reason": "validation_error"}), asyncio.Event()
    )
    with pytest.raises(BatchRefusedError):
        await forwarder.handle(deliveries([event(1)]))

    forwarder, state = make_forwarder(
        lambda r: ack(r, [{"index": 1, "reason": "invalid event"}]), asyncio.Event()
    )
    await forwarder.handle(deliveries([event(1), event(2), event(3)]))
    assert state.counts["events_forwarded"] == 2
    assert state.counts["events_rejected"] == 1


async def test_stopping_while_the_hub_is_away() -> None:
    stop = asyncio.Event()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    forwarder, state = make_forwarder(down, stop)
    asyncio.get_running_loop().call_later(0.3, stop.set)
    with pytest.raises(StopForwarding):
        await asyncio.wait_for(forwarder.handle(deliveries([event(1)])), 5)
    assert HUB_UNREACHABLE in state.problems
    assert not state.hub_up


async def test_severity_filter_types_and_batch_size() -> None:
    sizes: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append([i["id"] for i in json.loads(request.content)["items"]])
        return ack(request)

    settings = make_spoke_settings(
        "postgresql+asyncpg://unused@127.0.0.1/unused",
        "redis://127.0.0.1",
        "p",
        "http://hub.test",
        forward_min_severity="medium",
        forward_batch=2,
    )
    forwarder, state = make_forwarder(handler, asyncio.Event(), settings)
    other = new_envelope(
        "ingest.samples_received", {"x": 1}, source="ingest", cluster_id="c", occurred_at=datetime.now(UTC)
    )
    batch = [
        event(1, "low"),
        event(2, "high"),
        other,
        event(3, "critical"),
        event(4, "info"),
        event(5, "medium"),
    ]
    await forwarder.handle(deliveries(batch))
    assert sizes == [["ev-2", "ev-3"], ["ev-5"]]
    assert state.counts["events_filtered"] == 2


@pytest.mark.redis
async def test_a_stop_while_the_hub_is_away_leaves_entries_pending(
    redis_client: Redis, redis_url: str, spoke_prefix: str
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    settings = make_spoke_settings(
        "postgresql+asyncpg://unused@127.0.0.1/unused",
        redis_url,
        spoke_prefix,
        "http://hub.test",
        stream_max_deliveries=1,
    )
    stop = asyncio.Event()
    forwarder, state = make_forwarder(down, stop, settings)
    await publish(redis_client, stream_key(spoke_prefix, "ingest:events"), [event(1), event(2)], 10_000)
    task = asyncio.create_task(forwarder.run(redis_client))

    async def waiting() -> bool:
        return HUB_UNREACHABLE in state.problems

    await eventually(waiting)
    stop.set()
    await asyncio.wait_for(task, 5)
    pending = await redis_client.xpending(stream_key(spoke_prefix, "ingest:events"), "federation")
    assert pending["pending"] == 2
    assert await redis_client.xlen(dlq_key(spoke_prefix, "ingest:events")) == 0

"""The Hubble Relay collector against a local gRPC server that speaks Relay's GetFlows protocol on
127.0.0.1 (the real wire format, from the collector's protos): what it asks for, what it stores,
resuming after a broken stream, lost events, TLS and mutual TLS, one replica at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.json_format import ParseDict
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.sinks.rsyslog import DevPki, make_dev_pki
from qcdr_ingest.events import repository
from qcdr_ingest.events.registry import load_adapters
from qcdr_ingest.hubble import collector as collector_module
from qcdr_ingest.hubble._proto import flow_pb2, observer_pb2
from qcdr_ingest.hubble.collector import WATERMARK, HubbleCollector
from qcdr_ingest.hubble.relay import RelayTarget
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.ingest.events.factories import hubble_flow
from tests.ingest.service import conftest as service_fixtures
from tests.ingest.service.conftest import eventually

ingest_database_url = service_fixtures.ingest_database_url
db = service_fixtures.db

pytestmark = [pytest.mark.db]

NOW = datetime(2026, 7, 31, 10, 45, tzinfo=UTC)
ACK = {"TCP": {"source_port": 60524, "destination_port": 5432, "flags": {"ACK": True}}}


def response(seconds: float, **changes: Any) -> observer_pb2.GetFlowsResponse:
    """A GetFlowsResponse carrying the factory's SYN (or a variant), ``seconds`` after 10:41:00."""
    moment = datetime(2026, 7, 31, 10, 41, tzinfo=UTC) + timedelta(seconds=seconds)
    stamp = moment.isoformat().replace("+00:00", "Z")
    item = hubble_flow(time=stamp, **changes)
    out = observer_pb2.GetFlowsResponse(node_name=item["node_name"])
    ParseDict(item["flow"], out.flow, ignore_unknown_fields=True)  # fields the collector never reads
    out.time.FromDatetime(moment)
    return out


def lost(count: int) -> observer_pb2.GetFlowsResponse:
    out = observer_pb2.GetFlowsResponse()
    out.lost_events.source = flow_pb2.HUBBLE_RING_BUFFER
    out.lost_events.num_events_lost = count
    return out


@dataclass
class FakeRelay:
    """Each GetFlows call plays the next script: its responses, then the end of the stream (or
    UNAVAILABLE with ``fail``); with no script left it holds the stream open."""

    scripts: list[tuple[list[observer_pb2.GetFlowsResponse], bool]] = field(default_factory=list)
    requests: list[observer_pb2.GetFlowsRequest] = field(default_factory=list)
    open_streams: int = 0  # streams a client still follows

    async def get_flows(
        self, request: observer_pb2.GetFlowsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[observer_pb2.GetFlowsResponse]:
        self.requests.append(request)
        self.open_streams += 1
        try:
            if not self.scripts:
                await asyncio.Event().wait()
            responses, fail = self.scripts.pop(0)
            for r in responses:
                yield r
            if fail:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "relay restarting")
        finally:
            self.open_streams -= 1


@contextlib.asynccontextmanager
async def serve(fake: FakeRelay, pki: DevPki | None = None, mutual: bool = False) -> AsyncIterator[str]:
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(
        fake.get_flows,
        request_deserializer=observer_pb2.GetFlowsRequest.FromString,
        response_serializer=observer_pb2.GetFlowsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("observer.Observer", {"GetFlows": handler}),)
    )
    if pki is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
            root_certificates=pki.ca_cert.read_bytes() if mutual else None,
            require_client_auth=mutual,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def engine(ingest_database_url: str, db: asyncpg.Connection) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(ingest_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


MakeCollector = Callable[..., HubbleCollector]


@pytest.fixture
def make_collector(engine: AsyncEngine) -> MakeCollector:
    def make(address: str, **overrides: Any) -> HubbleCollector:
        values: dict[str, Any] = {
            "batch_wait_s": 0.05,
            "retry_s": 0.05,
            "retry_max_s": 0.2,
            "clock": lambda: NOW,
        }
        values.update(overrides)
        target = values.pop("target", RelayTarget(address))
        return HubbleCollector(
            engine, make_session_factory(engine), load_adapters().get("hubble"), target, "topgun", **values
        )

    return make


@contextlib.asynccontextmanager
async def running(collector: HubbleCollector) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def stored(db: asyncpg.Connection) -> list[str]:
    return [r["category"] for r in await db.fetch("SELECT category FROM ingest_events ORDER BY event_time")]


async def test_connection_starts_are_stored_with_the_watermark(
    db: asyncpg.Connection, make_collector: MakeCollector
) -> None:
    fake = FakeRelay([([response(1), response(2, l4=ACK), lost(7), response(3, uuid="copy")], False)])
    async with serve(fake) as address:
        collector = make_collector(address)
        async with running(collector):
            await eventually(lambda: _count(db, 1))
            await eventually(lambda: _watermark(db))
    (request,) = fake.requests[:1]
    assert request.follow
    assert request.since.ToDatetime(tzinfo=UTC) == NOW - timedelta(minutes=5)  # first start: backfill
    assert [f.tcp_flags[0].SYN for f in request.whitelist if f.tcp_flags] == [True]
    assert {p for f in request.whitelist for p in f.protocol} == {"udp", "icmp", "sctp", "dns"}
    assert [f.tcp_flags[0].ACK for f in request.blacklist] == [True]
    assert await stored(db) == ["network_flow"]  # the ACK ignored, the copy of the SYN a duplicate
    event = await db.fetchrow("SELECT cluster, pod FROM ingest_events")
    assert (event["cluster"], event["pod"]) == ("topgun", "api-9b649846d-bxqfc")
    # announced through the outbox like any stored event
    assert await db.fetchval("SELECT count(*) FROM ingest_outbox WHERE stream = 'ingest:events'") == 1
    mark = await db.fetchrow("SELECT watermark, details FROM ingest_watermarks WHERE name = $1", WATERMARK)
    assert mark["watermark"] == datetime(2026, 7, 31, 10, 41, 3, tzinfo=UTC)
    assert collector_module.LOST.labels(source="HUBBLE_RING_BUFFER")._value.get() >= 7


async def test_everything_a_stream_delivered_before_it_ended_is_stored(
    db: asyncpg.Connection, make_collector: MakeCollector
) -> None:
    """Relay ends the stream right after 7 flows; batches of 2: all 7 stored, none left queued."""
    script = [response(i, l4={"UDP": {"source_port": 40000 + i, "destination_port": 53}}) for i in range(7)]
    fake = FakeRelay([(script, False)])
    async with serve(fake) as address, running(make_collector(address, batch_max=2)):
        await eventually(lambda: _count(db, 7))
        await eventually(lambda: _requests(fake, 2))  # then it followed again


async def test_a_broken_stream_is_resumed_from_the_watermark(
    db: asyncpg.Connection, make_collector: MakeCollector
) -> None:
    first = [response(1), response(30, l4={"UDP": {"source_port": 40000, "destination_port": 53}})]
    again = [response(30, l4={"UDP": {"source_port": 40000, "destination_port": 53}}), response(90)]
    fake = FakeRelay([(first, True), (again, False)])
    clock = NOW
    async with serve(fake) as address:
        collector = make_collector(address, clock=lambda: clock)
        async with running(collector):
            await eventually(lambda: _count(db, 3))
            await eventually(lambda: _requests(fake, 3))
    assert len(fake.requests) >= 2
    resumed = fake.requests[1].since.ToDatetime(tzinfo=UTC)
    # the latest flow read (10:41:30) less the overlap, not the backfill
    assert resumed == datetime(2026, 7, 31, 10, 41, 20, tzinfo=UTC)
    assert await stored(db) == ["network_flow"] * 3  # the re-read UDP flow stored once


async def test_a_refused_flow_or_one_beyond_the_clock_does_not_move_the_watermark(
    db: asyncpg.Connection, make_collector: MakeCollector
) -> None:
    """A node whose clock runs a day fast: its flow is refused, and before it still moved the
    watermark (the newest flow *read*), so after the next reconnect Relay was asked for the flows
    since tomorrow and every node's flows until then were never read. A flow ignored (the middle
    of a connection) but stamped beyond the clock plus ``max_future`` must not move it either."""
    ahead = datetime.now(UTC) + timedelta(days=1) - datetime(2026, 7, 31, 10, 41, tzinfo=UTC)
    first = [
        response(1),
        response(ahead.total_seconds(), l4={"UDP": {"source_port": 40001, "destination_port": 53}}),
        response(15 * 60, l4=ACK),  # 10:56, the collector's clock 10:45 plus 5 min is 10:50
    ]
    again = [response(2, l4={"UDP": {"source_port": 40002, "destination_port": 53}})]
    fake = FakeRelay([(first, True), (again, False)])  # Relay restarts once
    async with serve(fake) as address, running(make_collector(address)):
        await eventually(lambda: _count(db, 2))
        await eventually(lambda: _requests(fake, 2))
    # resumed from the flow stored (10:41:01) less the overlap, not from a day ahead
    assert fake.requests[1].since.ToDatetime(tzinfo=UTC) == datetime(2026, 7, 31, 10, 40, 51, tzinfo=UTC)
    mark = await db.fetchval("SELECT watermark FROM ingest_watermarks WHERE name = $1", WATERMARK)
    assert mark == datetime(2026, 7, 31, 10, 41, 2, tzinfo=UTC)


async def test_a_failed_store_is_read_again_from_the_watermark(
    db: asyncpg.Connection, make_collector: MakeCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL away for one batch: nothing stored, the watermark not moved, the stream reopened
    from where it was, and the flow stored the second time."""
    real = repository.insert_events
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("the database went away")
        return int(await real(*args, **kwargs))

    monkeypatch.setattr(repository, "insert_events", flaky)  # the module the collector calls
    fake = FakeRelay([([response(1)], False), ([response(1)], False)])
    async with serve(fake) as address, running(make_collector(address)):
        await eventually(lambda: _count(db, 1))
    assert calls == 2
    assert fake.requests[0].since == fake.requests[1].since  # the watermark had not moved


async def test_tls_and_mutual_tls(
    db: asyncpg.Connection, make_collector: MakeCollector, tmp_path: Path
) -> None:
    pki = make_dev_pki(tmp_path / "pki")
    fake = FakeRelay([([response(1)], False)])
    async with serve(fake, pki, mutual=True) as address:
        anonymous = make_collector(address, target=RelayTarget(address, ca_file=pki.ca_cert))
        async with running(anonymous):
            await asyncio.sleep(0.5)
        assert fake.requests == []  # the handshake failed: no client certificate
        target = RelayTarget(
            address,
            ca_file=pki.ca_cert,
            cert_file=pki.client_cert,
            key_file=pki.client_key,
            server_name="localhost",
        )
        async with running(make_collector(address, target=target)):
            await eventually(lambda: _count(db, 1))


async def test_one_replica_at_a_time(db: asyncpg.Connection, make_collector: MakeCollector) -> None:
    fake = FakeRelay()  # holds every stream open
    async with serve(fake) as address:
        one, two = make_collector(address), make_collector(address)
        async with running(one), running(two):
            await eventually(lambda: _requests(fake, 1))
            await asyncio.sleep(0.5)  # the second keeps trying the lock
            assert len(fake.requests) == 1


async def test_a_follower_whose_lock_connection_dropped_stops_following(
    db: asyncpg.Connection, make_collector: MakeCollector
) -> None:
    """PostgreSQL frees a session lock with its connection (a proxy's idle timeout, a restart):
    the follower notices within ``lock_check_s`` and stops, so two replicas never stream at once."""
    fake = FakeRelay()  # holds every stream open
    async with serve(fake) as address:
        one = make_collector(address, lock_check_s=0.1, retry_s=0.5, retry_max_s=0.5)
        async with running(one):
            await eventually(lambda: _requests(fake, 1))
            # the lock's connection dies (not the collector's other connections)
            killed = await db.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objid::int = hashtext($1) AND granted",
                hubble_lock_name(),
            )
            assert killed
            two = make_collector(address, lock_check_s=0.1)
            async with running(two):
                # two takes the freed lock and follows; one, having noticed, did not carry on
                await eventually(lambda: _requests(fake, 2))
                await asyncio.sleep(0.6)  # one's retry: the lock is two's now
                assert len(fake.requests) == 2
                assert fake.open_streams == 1


def hubble_lock_name() -> str:
    from qcdr_ingest.hubble.collector import LOCK

    return LOCK


async def _count(db: asyncpg.Connection, n: int) -> bool:
    return int(await db.fetchval("SELECT count(*) FROM ingest_events")) >= n


async def _watermark(db: asyncpg.Connection) -> bool:
    return int(await db.fetchval("SELECT count(*) FROM ingest_watermarks WHERE name = $1", WATERMARK)) == 1


async def _requests(fake: FakeRelay, n: int) -> bool:
    return len(fake.requests) >= n


def test_settings_refuse_half_a_client_certificate(tmp_path: Path) -> None:
    from pydantic import ValidationError
    from qcdr_ingest.settings import IngestSettings

    with pytest.raises(ValidationError, match="go together"):
        IngestSettings(hubble_relay_address="relay:80", hubble_tls_cert_file=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="needs TLS"):
        IngestSettings(
            hubble_relay_address="relay:80",
            hubble_tls_cert_file=tmp_path / "c.pem",
            hubble_tls_key_file=tmp_path / "c.key",
        )


async def test_the_collector_runs_among_the_workers_when_an_address_is_set(
    engine: AsyncEngine, redis_client: Any
) -> None:
    from qcdr_ingest.qualys.config import QualysSettings
    from qcdr_ingest.settings import IngestSettings
    from qcdr_ingest.workers import build_workers

    sessions = make_session_factory(engine)
    off = build_workers(IngestSettings(), QualysSettings(), engine, redis_client, sessions)
    assert off.hubble is None
    on = build_workers(
        IngestSettings(hubble_relay_address="hubble-relay.kube-system:80"),
        QualysSettings(),
        engine,
        redis_client,
        sessions,
    )
    assert on.hubble is not None
    assert "hubble relay collector (hubble-relay.kube-system:80)" in on.describe()
    assert on.hubble.run in on.runners()


@pytest.mark.parametrize(("max_future", "expected"), [(None, 1), (timedelta(hours=2), 2)])
async def test_flows_stamped_ahead_of_the_clock_are_refused_by_the_configured_bound(
    db: asyncpg.Connection, make_collector: MakeCollector, max_future: timedelta | None, expected: int
) -> None:
    """A node whose clock runs an hour ahead: its flow is refused (the default bound, 300 s) unless
    ``QCDR_EVENTS_MAX_FUTURE_S`` allows it, as for events posted to ingest."""
    ahead = datetime.now(UTC) + timedelta(hours=1) - datetime(2026, 7, 31, 10, 41, tzinfo=UTC)

    def udp(port: int) -> dict[str, Any]:
        return {"UDP": {"source_port": port, "destination_port": 53}}

    # the third flow, after the one ahead in the stream, shows the stream was read past it
    script = [response(1), response(ahead.total_seconds(), l4=udp(40001)), response(2, l4=udp(40002))]
    fake = FakeRelay([(script, False)])
    overrides = {} if max_future is None else {"max_future": max_future}
    async with serve(fake) as address, running(make_collector(address, **overrides)):
        await eventually(lambda: _count(db, expected + 1))
    assert int(await db.fetchval("SELECT count(*) FROM ingest_events")) == expected + 1


async def test_the_workers_take_the_future_bound_from_the_settings(
    engine: AsyncEngine, redis_client: Any
) -> None:
    from qcdr_ingest.qualys.config import QualysSettings
    from qcdr_ingest.settings import IngestSettings
    from qcdr_ingest.workers import build_workers

    sessions = make_session_factory(engine)
    settings = IngestSettings(
        hubble_relay_address="hubble-relay.kube-system:80", events_max_future_s=7200, poller_enabled=True
    )
    qualys = QualysSettings(gateway_url="https://gateway.qg1.apps.qualys.com", username="u", password="p")
    workers = build_workers(settings, qualys, engine, redis_client, sessions)
    assert workers.hubble is not None
    assert workers.hubble.max_future == timedelta(hours=2)
    assert workers.poller is not None
    assert workers.poller._max_future == timedelta(hours=2)

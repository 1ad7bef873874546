"""Resolve-and-deny as the response service's loop: ingest's listed names (the real view, real
PostgreSQL) -> a DNS server on 127.0.0.1 (dnslib) -> the file and the Kubernetes API test server
(validating against ../shared/schemas), pruning only its own objects, surviving restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.dns_zone import Zone, serve_zone
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_common.testing.wait import eventually_async, until_a_session_waits_for_a_lock
from qcdr_response.app import create_app
from qcdr_response.dns.resolve_deny import parse_resolvers
from qcdr_response.dns.service import FILE_HEADER, FILENAME, ResolveDenyService
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.settings import DnsResolveDenyMode, ResponseSettings

from tests.response.feed_pipelines import migrated_database, run_sql, validating_k8s
from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db]

ZONE: dict[str, list[tuple[str, str, int]]] = {
    "pool.bad.example.": [("A", "203.0.113.10", 300), ("AAAA", "2001:db8::10", 300)],
    "fast.bad.example.": [("A", "198.51.100.7", 5)],
    "sinkholed.bad.example.": [("A", "0.0.0.0", 300)],
    # not listed itself: a pod asked for it, under the listed pool.bad.example
    "cdn.pool.bad.example.": [("A", "203.0.113.99", 300)],
}
LISTED = [
    ("pool.bad.example", ["abuse-ch", "maltrail"], ["c2"]),
    ("fast.bad.example", ["maltrail"], ["malware"]),
    ("sinkholed.bad.example", ["maltrail"], []),
    ("gone.bad.example", ["maltrail"], []),
]
TOKEN = "read-token-0123456789abcdef"
# a policy of the lifecycle (qcdr-managed, another pipeline): pruning here must never touch it
OTHER = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumClusterwideNetworkPolicy",
    "metadata": {
        "name": "cdr-block-exfiltration",
        "labels": {"app.kubernetes.io/managed-by": "qcdr", "qcdr.qualys.com/pipeline": "cdr"},
    },
    "spec": {"endpointSelector": {}, "egressDeny": [{"toCIDR": ["192.0.2.1/32"]}]},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def database_url(base_database_url: str) -> Iterator[str]:
    """Response's and ingest's migrations: the input comes from ingest's real view."""
    with migrated_database(base_database_url, "qcdr_response_dns") as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    await run_sql(
        database_url, "INSERT INTO intel_domains (domain, feeds, categories) VALUES ($1, $2, $3)", *LISTED
    )
    yield database_url
    await run_sql(database_url, "TRUNCATE intel_domains, response_dns_resolve_deny")


@pytest.fixture
def dns_server() -> Iterator[tuple[int, Zone]]:
    with serve_zone({k: list(v) for k, v in ZONE.items()}) as served:
        yield served


@pytest.fixture
def k8s(shared_path: Path) -> Iterator[K8sTestServer]:
    with validating_k8s(shared_path) as server:
        yield server


def _settings(
    db: str, port: int, tmp_path: Path, kubeconfig: Path | None, **overrides: Any
) -> ResponseSettings:
    values: dict[str, Any] = {
        "database_url": db,
        "dns_resolve_deny": DnsResolveDenyMode.APPLY if kubeconfig else DnsResolveDenyMode.FILES,
        "dns_resolvers": (f"127.0.0.1:{port}",),
        "dns_min_ttl_s": 0,
        "output_dir": tmp_path / "out",
        "kubeconfig": kubeconfig,
    }
    return response_settings(**(values | overrides))


async def _refresh(settings: ResponseSettings, clock: Clock) -> Any:
    engine = make_engine(settings.database_url.get_secret_value())
    cluster = ClusterGateway.from_settings(settings)
    try:
        service = ResolveDenyService(settings, make_session_factory(engine), cluster, clock=clock)
        return await service.refresh()
    finally:
        if cluster is not None:
            await cluster.close()
        await engine.dispose()


def _cidrs(k8s: K8sTestServer) -> list[str]:
    groups = k8s.objects("CiliumCIDRGroup")
    assert set(groups) == {(None, "qcdr-dns-blocked-000")}
    found: list[str] = groups[(None, "qcdr-dns-blocked-000")]["spec"]["externalCIDRs"]
    return found


async def test_applies_refreshes_and_prunes_only_its_own(
    db: str,
    dns_server: tuple[int, Zone],
    k8s: K8sTestServer,
    tmp_path: Path,
    shared_path: Path,
    redis_url: str,
) -> None:
    port, zone = dns_server
    clock = Clock()
    k8s.seed(OTHER)
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    settings = _settings(db, port, tmp_path, kubeconfig, dns_tetragon=True)

    first = await _refresh(settings, clock)
    assert first.error is None, first.as_dict()
    assert (first.listed, first.resolved, first.addresses) == (4, 2, 3)
    assert first.failed == {"gone.bad.example": "NXDOMAIN"}
    assert first.dropped == {"sinkholed.bad.example": ["0.0.0.0"]}  # a sinkhole is never denied
    assert _cidrs(k8s) == ["198.51.100.7/32", "203.0.113.10/32", "2001:db8::10/128"]
    assert set(k8s.objects("CiliumClusterwideNetworkPolicy")) == {
        (None, "qcdr-dns-resolve-deny"),
        (None, "cdr-block-exfiltration"),
    }
    assert set(k8s.objects("TracingPolicy")) == {(None, "qcdr-dns-resolve-deny")}
    # the file: its own header (the lifecycle's file sync prunes only files with the policy header)
    text = (tmp_path / "out" / FILENAME).read_text()
    assert text.startswith(FILE_HEADER)
    validator = ManifestValidator(shared_path)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == ["CiliumCIDRGroup", "CiliumClusterwideNetworkPolicy", "TracingPolicy"]
    for doc in docs:
        assert validator.errors(doc) == [], doc["kind"]

    # fast.bad.example moves: its old address lives out its TTL (5 s), then goes
    zone.records["fast.bad.example."] = [("A", "198.51.100.8", 5)]
    clock.now += 2
    second = await _refresh(settings, clock)
    assert {"198.51.100.7/32", "198.51.100.8/32"} <= set(_cidrs(k8s))
    assert second.addresses == 4
    clock.now += 4
    third = await _refresh(settings, clock)
    assert third.expired == 1
    assert "198.51.100.7/32" not in _cidrs(k8s)

    # the name leaves the feeds and stops resolving: its addresses still live out their TTL
    await run_sql(db, "DELETE FROM intel_domains WHERE domain = 'fast.bad.example'")
    del zone.records["fast.bad.example."]
    clock.now += 1
    fourth = await _refresh(settings, clock)
    assert fourth.listed == 3
    assert "198.51.100.8/32" in _cidrs(k8s)
    clock.now += 10
    await _refresh(settings, clock)
    assert _cidrs(k8s) == ["203.0.113.10/32", "2001:db8::10/128"]

    # Tetragon turned off: its policy is pruned, the lifecycle's policy stays
    fifth = await _refresh(_settings(db, port, tmp_path, kubeconfig), clock)
    assert fifth.applied["pruned"] == ["TracingPolicy/qcdr-dns-resolve-deny"], fifth.as_dict()
    assert k8s.objects("TracingPolicy") == {}
    assert (None, "cdr-block-exfiltration") in k8s.objects("CiliumClusterwideNetworkPolicy")

    # the API shows the last refresh, whichever process ran it (read scope)
    app = create_app(settings.model_copy(update={"redis_url": SecretStr(redis_url)}), auth=_auth())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://response") as client:
            assert (await client.get("/v1/dns/resolve-deny")).status_code == 401
            response = await client.get("/v1/dns/resolve-deny", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["mode"], body["addresses"]) == ("apply", 2)
    assert body["last_refresh"]["listed_names"] == 3
    assert body["last_refresh"]["failed_sample"] == {"gone.bad.example": "NXDOMAIN"}
    assert body["last_refresh"]["applied"]["pruned"] == ["TracingPolicy/qcdr-dns-resolve-deny"]


def _auth() -> ApiAuthSettings:
    return ApiAuthSettings(token=SecretStr("write-token-0123456789abcdef"), token_read=SecretStr(TOKEN))


async def test_files_mode_without_the_view_and_with_a_dead_resolver(
    database_url: str, dns_server: tuple[int, Zone], tmp_path: Path
) -> None:
    port, _ = dns_server
    clock = Clock()
    await run_sql(database_url, "TRUNCATE response_dns_resolve_deny")
    # the view is read by name: one that is not there is a warning, not a crash
    settings = _settings(database_url, port, tmp_path, None, dns_listed_view="no_such_view")
    outcome = await _refresh(settings, clock)
    assert outcome.error is None
    assert outcome.listed == 0
    assert "no_such_view is not in this database" in outcome.warnings[0]
    docs = [d for d in yaml.safe_load_all((tmp_path / "out" / FILENAME).read_text()) if d]
    assert docs[0]["spec"]["externalCIDRs"] == []  # an empty group keeps the policy's reference valid

    # a resolver that does not answer: each name fails with a timeout, the refresh still completes
    await run_sql(
        database_url, "INSERT INTO intel_domains (domain, feeds, categories) VALUES ($1, $2, $3)", *LISTED
    )
    try:
        silent = _settings(database_url, 9, tmp_path, None, dns_max_names=2)
        outcome = await _refresh(silent, clock)
    finally:
        await run_sql(database_url, "TRUNCATE intel_domains, response_dns_resolve_deny")
    assert outcome.error is None
    assert (outcome.listed, outcome.left_out) == (2, 2)
    assert set(outcome.failed) == {"pool.bad.example", "fast.bad.example"}  # the most-listed first
    assert "size limit 2 names" in outcome.warnings[0]


async def test_a_cluster_that_does_not_answer_is_reported_not_raised(
    db: str, dns_server: tuple[int, Zone], tmp_path: Path
) -> None:
    port, _ = dns_server
    server = K8sTestServer()
    with server.serve():
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    # the API server is gone: the addresses are still resolved, kept and written to the file
    outcome = await _refresh(_settings(db, port, tmp_path, kubeconfig), Clock())
    assert outcome.error is not None
    assert outcome.addresses == 3
    assert (tmp_path / "out" / FILENAME).exists()
    connection = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        saved = json.loads(await connection.fetchval("SELECT report FROM response_dns_resolve_deny"))
    finally:
        await connection.close()
    assert saved["error"] == outcome.error  # the API shows why


async def test_names_pods_asked_for_come_first(db: str, dns_server: tuple[int, Zone], tmp_path: Path) -> None:
    port, _ = dns_server
    payload = {"attributes": {"domain": "CDN.pool.bad.example.", "listed": "pool.bad.example"}}
    stale = {"attributes": {"domain": "old.fast.bad.example", "listed": "fast.bad.example"}}
    await run_sql(
        db,
        "INSERT INTO response_findings (id, kind, category, severity, event_time, namespace, envelope_id,"
        " payload, received_at) VALUES ($1, 'intel_match', $2, 'high', now(), 'shop', $1, $3, $4)",
        ("f-1", "dns.malicious_domain", json.dumps(payload), datetime.now(UTC)),
        ("f-2", "dns.malicious_domain", json.dumps(stale), datetime.now(UTC) - timedelta(days=30)),
    )
    try:
        outcome = await _refresh(_settings(db, port, tmp_path, None, dns_max_names=2), Clock())
    finally:
        await run_sql(db, "TRUNCATE response_findings CASCADE")
    # the subdomain a pod asked for, then the most-listed name; a finding older than 7 days is not
    assert outcome.failed == {}
    assert (outcome.listed, outcome.left_out, outcome.addresses) == (2, 3, 3)
    docs = [d for d in yaml.safe_load_all((tmp_path / "out" / FILENAME).read_text()) if d]
    assert docs[0]["spec"]["externalCIDRs"] == ["203.0.113.10/32", "203.0.113.99/32", "2001:db8::10/128"]


def test_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a cluster"):
        response_settings(dns_resolve_deny="apply")
    with pytest.raises(ValueError, match="needs output_dir"):
        response_settings(dns_resolve_deny="files")
    with pytest.raises(ValueError, match="dns_listed_view"):
        response_settings(dns_listed_view="x; DROP TABLE y")
    with pytest.raises(ValueError, match="above"):
        response_settings(dns_min_ttl_s=10, dns_max_ttl_s=5)
    with pytest.raises(ValueError, match="dns_resolvers: 'kube-dns': not an IP address"):
        response_settings(dns_resolvers=["kube-dns"])
    assert parse_resolvers(("10.96.0.10",)) == (["10.96.0.10"], 53)
    assert parse_resolvers(("127.0.0.1:5353", "[::1]:5353")) == (["127.0.0.1", "::1"], 5353)
    with pytest.raises(ValueError, match="same port"):
        parse_resolvers(("127.0.0.1:53", "127.0.0.2:5353"))
    with pytest.raises(ValueError, match="1-65535"):
        parse_resolvers(("127.0.0.1:0",))


async def test_the_domains_verdicts_name_are_resolved_too(
    database_url: str, dns_server: tuple[int, Zone], tmp_path: Path
) -> None:
    """Once mode resolves the CDR findings' IOC domains; the service does so for verdict findings
    (not anomalies), even without ingest's view, and never for names that only resolve locally."""
    port, zone = dns_server
    zone.records["c2.evil.example."] = [("A", "198.51.100.77", 600)]
    zone.records["seen.anomaly.example."] = [("A", "198.51.100.78", 600)]
    rows = [
        ("v-1", "source", {"network": {"domain": "C2.evil.example."}}),
        ("v-2", "attack_technique", {"network": {"domain": "metadata.google.internal"}}),
        ("a-1", "anomaly", {"network": {"domain": "seen.anomaly.example"}}),
    ]
    await run_sql(
        database_url,
        "INSERT INTO response_findings (id, kind, category, severity, event_time, namespace, envelope_id,"
        " payload) VALUES ($1, $2, 'c', 'high', now(), 'shop', $1, $3)",
        *[(i, kind, json.dumps(payload)) for i, kind, payload in rows],
    )
    try:
        settings = _settings(database_url, port, tmp_path, None, dns_listed_view="no_such_view")
        outcome = await _refresh(settings, Clock())
    finally:
        await run_sql(database_url, "TRUNCATE response_findings, response_dns_resolve_deny CASCADE")
    assert outcome.error is None
    assert outcome.resolved == 1
    docs = [d for d in yaml.safe_load_all((tmp_path / "out" / FILENAME).read_text()) if d]
    assert docs[0]["spec"]["externalCIDRs"] == ["198.51.100.77/32"]


async def test_replicas_refresh_and_write_one_after_the_other(
    db: str, dns_server: tuple[int, Zone], tmp_path: Path
) -> None:
    """Two replicas' refreshes: the second waits until the first has written its documents, so an
    older set never lands after a newer one."""
    port, _ = dns_server
    settings = _settings(db, port, tmp_path, None)
    events: list[str] = []
    writing = asyncio.Event()

    class Replica(ResolveDenyService):
        name = ""

        async def _output(self, outcome: Any, docs: Any) -> None:
            events.append(f"{self.name} writes")
            if self.name == "a":
                writing.set()
                # a slow cluster: still writing when b's refresh waits for a's lock (had b not
                # waited, it would write now)
                await until_a_session_waits_for_a_lock(db)
            await super()._output(outcome, docs)
            events.append(f"{self.name} wrote")

    engine = make_engine(db)
    try:
        a, b = (Replica(settings, make_session_factory(engine), None, clock=Clock()) for _ in range(2))
        a.name, b.name = "a", "b"
        first = asyncio.create_task(a.refresh())
        await writing.wait()
        second = await b.refresh()
        assert (await first).error is None
        assert second.error is None
    finally:
        await engine.dispose()
    assert events == ["a writes", "a wrote", "b writes", "b wrote"]


async def test_a_replica_skips_a_round_another_replica_refreshed(
    db: str, dns_server: tuple[int, Zone], tmp_path: Path
) -> None:
    """Every replica runs the loop: the round's lookups and applies are done once, by whichever
    replica comes first; the others write their own file from the saved cache."""
    port, zone = dns_server
    a_settings = _settings(db, port, tmp_path / "a", None, dns_refresh_s=600)
    b_settings = _settings(db, port, tmp_path / "b", None, dns_refresh_s=600)
    engine = make_engine(db)
    try:
        a = ResolveDenyService(a_settings, make_session_factory(engine), None, clock=Clock())
        b = ResolveDenyService(b_settings, make_session_factory(engine), None, clock=Clock())
        stop = asyncio.Event()
        loop_a = asyncio.create_task(a.run(stop))
        await eventually_async(written(tmp_path / "a"), what="a's file")
        asked = len(zone.queries)
        assert asked > 0
        loop_b = asyncio.create_task(b.run(stop))
        await eventually_async(written(tmp_path / "b"), what="b's file")
        stop.set()
        await asyncio.gather(loop_a, loop_b)
        assert len(zone.queries) == asked  # b asked nothing
        a_file = (tmp_path / "a" / "out" / FILENAME).read_text()
        assert (tmp_path / "b" / "out" / FILENAME).read_text() == a_file
        assert "203.0.113.10/32" in a_file
        # an explicit refresh (no round) and a round after the last refresh's are not skipped
        assert not (await b.refresh()).skipped
        assert len(zone.queries) > asked
        asked = len(zone.queries)
        await run_sql(
            db, "UPDATE response_dns_resolve_deny SET refreshed_at = now() - interval '541 seconds'"
        )
        outcome = await b.refresh(unless_refreshed_within_s=540)
        assert not outcome.skipped
        assert outcome.error is None
        assert len(zone.queries) > asked
        assert (await a.refresh(unless_refreshed_within_s=540)).skipped
    finally:
        await engine.dispose()


def written(base: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (base / "out" / FILENAME).exists()

    return check

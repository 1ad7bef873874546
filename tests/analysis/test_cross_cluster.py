"""Cross-cluster correlation (federation, issue 10): ``distinct_clusters`` patterns over the events
spokes forward to a hub, joined on the image digest or the indicator; exactly once across
redelivery and restores, never within one cluster, never for benign shared destinations; and the
``/v1/chains`` API showing every cluster."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_analysis.correlation import Engine, load_patterns
from qcdr_analysis.correlation.checkpoint import RedisCheckpoint
from qcdr_analysis.correlation.correlator import Correlator
from qcdr_analysis.correlation.flusher import CorrelationFlusher
from qcdr_analysis.correlation.patterns import builtin_patterns, parse
from qcdr_analysis.detectors import attack_rules, domain_intel, intel_match, source
from qcdr_analysis.findings.handlers import EventsHandler
from qcdr_analysis.findings.service import DetectorSet
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import Delivery
from qcdr_ingest.events.adapters.tetragon import convert
from qcdr_ingest.qualys.normalize import normalize_finding
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import analysis_settings, event_envelope

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IMAGE = "sha256:" + "ab12" * 16
OTHER_IMAGE = "sha256:" + "cd34" * 16
C2 = "45.148.10.81"  # a public address (the Qualys demo data's pick); listed in these tests only
OTHER_C2 = "91.92.109.44"
POPULAR = "140.82.112.3"  # a popular shared destination: every cluster talks to it
BY_IMAGE = "same_image_attacked_in_several_clusters"
BY_IOC = "same_ioc_in_several_clusters"
_ids = count(1)


def event(
    cluster: str | None,
    seconds: float,
    *,
    techniques: tuple[str, ...] = ("T1059.004",),
    severity: str = "high",
    image: str | None = IMAGE,
    ip: str | None = None,
    domain: str | None = None,
    category: str = "alert",
    source_name: str = "falco",
    pod: str = "api-1",
) -> SecurityEvent:
    n = next(_ids)
    network = {"ip": ip, "port": 443, "domain": domain} if ip or domain else None
    return SecurityEvent.model_validate(
        {
            "id": f"xc-{n:06d}",
            "source": source_name,
            "category": category,
            "severity": severity,
            "event_time": T0 + timedelta(seconds=seconds),
            "workload": {
                "cluster": cluster,
                "namespace": "shop",
                "pod": pod,
                "container": "api",
                "container_id": f"{cluster}-{pod}",
                "image_digest": image,
            },
            "network": network,
            "techniques": list(techniques),
        }
    )


def finding_on(e: SecurityEvent, detector: str, category: str, techniques: tuple[str, ...]) -> Finding:
    """A single-event finding as the named detector raises it (the engine merges it into the event)."""
    return Finding(
        id=f"f-{detector}-{e.id}",
        kind=FindingKind.INTEL_MATCH if "intel" in detector else FindingKind.ATTACK_TECHNIQUE,
        detector=detector,
        category=category,
        severity=e.severity,
        techniques=techniques,
        event_time=e.event_time,
        evidence_event_ids=(e.id,),
        workload=e.workload,
        network=e.network,
        source=e.source,
    )


def listed(e: SecurityEvent) -> Finding:
    """What intel_match raises for a listed destination."""
    return finding_on(e, intel_match.NAME, "networking_c2_communication", ("T1071",))


def connect(cluster: str | None, seconds: float, ip: str, **kwargs: Any) -> SecurityEvent:
    return event(
        cluster, seconds, techniques=(), severity="info", ip=ip, category="process_connect", **kwargs
    )


def run(engine: Engine, *batches: tuple[list[SecurityEvent], list[Finding]]) -> list[Finding]:
    out: list[Finding] = []
    for events, findings in batches:
        out += engine.feed(events, findings)
    return out + engine.flush()


def chains_of(found: list[Finding], pattern: str) -> list[Finding]:
    return [c for c in found if c.category == f"chain.{pattern}"]


@pytest.fixture(scope="module")
def patterns() -> list[Any]:
    return load_patterns()


# ----------------------------------------------------------------------------- the option


def test_a_distinct_clusters_step_never_takes_a_cluster_already_in_the_chain() -> None:
    (pattern,) = parse(
        """
name: three_clusters
description: test
severity: high
maxspan: 1h
join: image
distinct_clusters: true
steps:
  - {name: one, technique: T1059}
  - {name: two, technique: T1059}
  - {name: three, technique: T1059}
""",
        "test.yaml",
    )
    a1, a2, b1, b2, c1 = (event(c, i * 5, pod=f"p{i}") for i, c in enumerate("aabbc"))
    found = run(Engine([pattern]), ([a1, a2, b1, b2, c1], []))
    (chain,) = found
    assert [s["cluster"] for s in chain.attributes["steps"]] == ["a", "b", "c"]
    # the latest start in a cluster stands (one partial per stage), each later step elsewhere
    assert [s["event_id"] for s in chain.attributes["steps"]] == [a2.id, b1.id, c1.id]
    assert run(Engine([pattern]), ([a1, a2, b1, b2], [])) == []  # two clusters are not three
    # without the option the same events make chains inside one cluster
    plain = pattern.model_copy(update={"distinct_clusters": False})
    assert run(Engine([plain]), ([a1, a2, b1], []))


def test_the_new_options_leave_existing_pattern_digests_alone() -> None:
    """A pattern's checkpointed state is kept across a restart only if its digest (a hash of its
    dump) is unchanged: patterns that do not use the new options must dump as before."""
    for pattern in builtin_patterns():
        dumped = pattern.model_dump_json()
        if pattern.name in (BY_IMAGE, BY_IOC, "lateral_movement_between_clusters"):
            assert '"distinct_clusters":true' in dumped
        else:
            assert "distinct_clusters" not in dumped
            assert '"detector"' not in dumped


# ----------------------------------------------------------------------------- same image


def test_the_same_image_attacked_in_two_clusters_is_one_chain(patterns: list[Any]) -> None:
    shell = event("cluster-a", 0, techniques=("T1059.004",))
    download = event("cluster-b", 40, techniques=("T1105",), pod="web-7")
    found = run(Engine(patterns), ([shell], []), ([download], []))
    (chain,) = chains_of(found, BY_IMAGE)
    assert found == [chain]
    assert chain.kind is FindingKind.CHAIN
    assert chain.severity.value == "critical"
    assert chain.workload.cluster == "cluster-a"  # where it began
    assert chain.workload.pod == "api-1"
    assert chain.attributes["clusters"] == ["cluster-a", "cluster-b"]
    assert [s["cluster"] for s in chain.attributes["steps"]] == ["cluster-a", "cluster-b"]
    assert chain.attributes["join"] == {"key": "image", "value": IMAGE}
    assert chain.evidence_event_ids == (shell.id, download.id)
    assert {"T1059.004", "T1105"} <= set(chain.techniques)
    assert "cluster cluster-a" in chain.explanation
    assert "cluster cluster-b" in chain.explanation


def test_fed_twice_is_still_one_chain(patterns: list[Any]) -> None:
    a = event("cluster-a", 0)
    b = event("cluster-b", 10)
    engine = Engine(patterns)
    found = run(engine, ([a, a, b], []), ([a, b], []), ([b, a], []))
    assert len(chains_of(found, BY_IMAGE)) == 1
    assert engine.stats.duplicates >= 4


def test_exactly_once_across_a_checkpoint_restore(patterns: list[Any]) -> None:
    a = event("cluster-a", 0)
    quiet = event("cluster-a", 60, techniques=(), severity="info")  # moves the watermark
    b = event("cluster-b", 70)
    engine = Engine(patterns)
    assert engine.feed([a, quiet]) == []
    (partial,) = [p for p in engine.partials() if p["pattern"] == BY_IMAGE]
    assert partial["progress"] == "1/2"
    assert partial["steps"][0]["cluster"] == "cluster-a"
    snapshot = json.loads(json.dumps(engine.snapshot()))  # what Redis holds
    restarted = Engine(load_patterns())
    restarted.restore(snapshot)
    assert restarted.partials() == engine.partials()
    # the consumer re-reads from the last acknowledged offset: everything again, then b
    found = run(restarted, ([a, quiet, b], []))
    (chain,) = chains_of(found, BY_IMAGE)
    assert chain.attributes["clusters"] == ["cluster-a", "cluster-b"]
    # the uninterrupted engine names it the same (the findings table keeps one)
    (same,) = chains_of(run(engine, ([b], [])), BY_IMAGE)
    assert same.id == chain.id


async def test_exactly_once_across_a_redis_checkpoint_restart(redis_client: Any, redis_prefix: str) -> None:
    a, b = event("cluster-a", 0), event("cluster-b", 5)
    checkpoint = RedisCheckpoint(redis_client, f"{redis_prefix}-xc")
    try:
        first = Correlator.from_patterns(None, checkpoint)
        await first.restore()
        assert first.feed([a], []) + first.flush() == []
        await first.checkpoint()  # committed; the process stops

        second = Correlator.from_patterns(None, checkpoint)
        await second.restore()
        emitted = second.feed([a, b], []) + second.flush()  # a redelivered, then b
        assert [c.category for c in emitted] == [f"chain.{BY_IMAGE}"]
        await second.checkpoint()
        await second.committed(emitted)

        third = Correlator.from_patterns(None, checkpoint)
        await third.restore()
        assert third.feed([a, b], []) + third.flush() == []
    finally:
        await checkpoint.clear()


def test_both_steps_in_one_cluster_are_no_chain(patterns: list[Any]) -> None:
    events = [event("cluster-a", i * 10, pod=f"api-{i}") for i in range(4)]
    assert chains_of(run(Engine(patterns), (events, [])), BY_IMAGE) == []


def test_two_clusters_but_different_images_are_no_chain(patterns: list[Any]) -> None:
    a = event("cluster-a", 0, image=IMAGE)
    b = event("cluster-b", 10, image=OTHER_IMAGE)
    assert chains_of(run(Engine(patterns), ([a, b], [])), BY_IMAGE) == []


def test_medium_severity_and_package_managers_are_not_attacks(patterns: list[Any]) -> None:
    # kubectl exec shells (interactive-shell-via-runtime) and package installs are medium
    a = event("cluster-a", 0, severity="medium")
    b = event("cluster-b", 10, severity="medium")
    assert chains_of(run(Engine(patterns), ([a, b], [])), BY_IMAGE) == []


def test_an_event_without_a_cluster_takes_no_part(patterns: list[Any]) -> None:
    a = event("cluster-a", 0)
    unknown = event(None, 10)
    b = event("cluster-b", 20)
    assert chains_of(run(Engine(patterns), ([a, unknown], [])), BY_IMAGE) == []
    assert chains_of(run(Engine(patterns), ([unknown, b], [])), BY_IMAGE) == []
    # and it does not stand between two clusters either
    (chain,) = chains_of(run(Engine(patterns), ([a, unknown, b], [])), BY_IMAGE)
    assert chain.evidence_event_ids == (a.id, b.id)


# ----------------------------------------------------------------------------- same indicator


def test_the_same_listed_address_from_two_clusters_is_one_chain(patterns: list[Any]) -> None:
    a = connect("cluster-a", 0, C2, image=IMAGE)
    b = connect("cluster-b", 30, C2, image=OTHER_IMAGE)
    found = run(Engine(patterns), ([a], [listed(a)]), ([b], [listed(b)]))
    (chain,) = chains_of(found, BY_IOC)
    assert found == [chain]
    assert chain.attributes["join"] == {"key": "ioc", "value": C2}
    assert chain.attributes["clusters"] == ["cluster-a", "cluster-b"]
    assert chain.workload.cluster == "cluster-a"
    assert [s["finding_ids"] for s in chain.attributes["steps"]] == [[listed(a).id], [listed(b).id]]


def test_two_clusters_but_different_indicators_are_no_chain(patterns: list[Any]) -> None:
    a = connect("cluster-a", 0, C2)
    b = connect("cluster-b", 30, OTHER_C2)
    assert run(Engine(patterns), ([a, b], [listed(a), listed(b)])) == []


def test_the_same_listed_address_twice_in_one_cluster_is_no_chain(patterns: list[Any]) -> None:
    a, a2 = connect("cluster-a", 0, C2), connect("cluster-a", 30, C2, pod="api-2")
    assert run(Engine(patterns), ([a, a2], [listed(a), listed(a2)])) == []


def test_a_benign_shared_destination_is_no_chain(patterns: list[Any]) -> None:
    """Every cluster talks to the popular destination; only a verdict on the destination counts."""
    plain = [connect(c, i * 10, POPULAR, image=f"sha256:{i:064x}") for i, c in enumerate(["a", "b", "c"])]
    assert run(Engine(patterns), (plain, [])) == []
    # a binary in /tmp connecting out (attack_rules' heuristic, same category as intel_match's):
    # suspicious, but nothing says the destination is bad
    heuristic = [
        finding_on(e, attack_rules.NAME, "networking_c2_communication", ("T1071", "T1105")) for e in plain
    ]
    assert chains_of(run(Engine(patterns), (plain, heuristic)), BY_IOC) == []
    # Qualys "suspicious communication" (an attacker-favoured port), not its C2 verdict
    qualys = [
        event(c, i * 10, source_name="qualys", category="Networking_Suspicious_Communication", ip=POPULAR)
        for i, c in enumerate(["a", "b"])
    ]
    own = [finding_on(e, source.NAME, e.category, e.techniques) for e in qualys]
    assert chains_of(run(Engine(patterns), (qualys, own)), BY_IOC) == []


def test_private_addresses_are_not_the_same_host_in_two_clusters(patterns: list[Any]) -> None:
    a, b = connect("cluster-a", 0, "10.0.3.17"), connect("cluster-b", 10, "10.0.3.17")
    assert run(Engine(patterns), ([a, b], [listed(a), listed(b)])) == []


def test_qualys_c2_verdicts_from_two_clusters(patterns: list[Any]) -> None:
    """Qualys CDR findings as ingest normalizes them, with the source detector's findings."""

    def qualys(cluster: str, seconds: int, ip: str) -> SecurityEvent:
        return normalize_finding(
            {
                "uuid": f"9b1c{next(_ids):028x}",
                "threatCategory": "Networking_C2_Communication",
                "severity": 4,
                "timestamp": (T0 + timedelta(seconds=seconds)).isoformat(),
                "mitreRulesInfo": {"T1071.001": {}},
                "clusterName": cluster,
                "namespace": "payments",
                "pod": "checkout-api-7d9f-x2",
                "deploymentName": "checkout-api",
                "containerName": "checkout",
                "imageName": "registry.example.com/payments/checkout-api:2.14.1",
                "processName": "python3",
                "networkInformation": {
                    "destinationIp": ip,
                    "destinationPort": 4444,
                    "domain": "cdn-sync.badnet-demo.com",
                },
            }
        )

    events = [qualys("cluster-a", 0, C2), qualys("cluster-b", 20, OTHER_C2)]
    config = source.Config()
    (chain,) = run(Engine(patterns), (events, source.detect(events, config)))
    assert chain.category == f"chain.{BY_IOC}"
    # both contacted the domain (the join prefers the name: the addresses behind it may differ)
    assert chain.attributes["join"] == {"key": "ioc", "value": "cdn-sync.badnet-demo.com"}
    # without the source detector's finding a raw event vouches for nothing
    assert run(Engine(patterns), (events, [])) == []


def test_a_listed_domain_looked_up_from_two_clusters(patterns: list[Any]) -> None:
    lookups = [
        event(
            c,
            i * 10,
            techniques=(),
            severity="info",
            category="dns_query",
            domain="c2.evil-demo.net",
            source_name="dns",
        )
        for i, c in enumerate(["cluster-a", "cluster-b"])
    ]
    verdicts = [finding_on(e, domain_intel.NAME, "dns.malicious_domain", ("T1071.004",)) for e in lookups]
    (chain,) = run(Engine(patterns), (lookups, verdicts))
    assert chain.category == f"chain.{BY_IOC}"
    assert chain.attributes["join"]["value"] == "c2.evil-demo.net"


def test_a_snapshot_without_item_detectors_restores(patterns: list[Any]) -> None:
    """Checkpoints written before items carried their detectors still restore."""
    a = connect("cluster-a", 0, C2)
    b = connect("cluster-b", 5, C2)
    engine = Engine(patterns)
    assert engine.feed([a, b], [listed(a), listed(b)]) == []  # both wait out the lateness
    snapshot = json.loads(json.dumps(engine.snapshot()))
    assert len(snapshot["buffer"]) == 2
    for entry in snapshot["buffer"].values():
        del entry["item"]["detectors"]
    restarted = Engine(patterns)
    restarted.restore(snapshot)
    assert [c.category for c in restarted.flush()] == [f"chain.{BY_IOC}"]


# ----------------------------------------------------------------------------- in the service

READ = "cross-cluster-read-token-0123456789"


def tetragon_connect(cluster: str, seconds: float, binary: str, ip: str, digest: str) -> SecurityEvent:
    """A Tetragon tcp_connect kprobe line, through ingest's adapter, as a spoke forwards it."""
    pod = {
        "namespace": "shop",
        "name": "api-6f87496b94-qdlh8",
        "container": {
            "id": f"containerd://{digest[-64:]}",
            "name": "api",
            "image": {"id": f"docker.io/acme/api@{digest}", "name": "docker.io/acme/api:1.0"},
            "pid": 1,
        },
        "workload": "api",
        "workload_kind": "Deployment",
    }

    def process(path: str) -> dict[str, Any]:
        return {"exec_id": f"ZXhl{next(_ids):08d}", "pid": 7, "binary": path, "arguments": "", "pod": pod}

    sock = {"family": "AF_INET", "protocol": "IPPROTO_TCP", "daddr": ip, "dport": 443, "sport": 40112}
    body = {
        "process": process(binary),
        "parent": process("/bin/sh"),
        "function_name": "tcp_connect",
        "args": [{"sock_arg": sock}],
        "action": "KPROBE_ACTION_POST",
        "policy_name": "connect",
    }
    at = (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return convert({"process_kprobe": body, "node_name": "node-1", "time": at}, cluster)


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO intel_indicators (cidr, feeds, confidence) VALUES (CAST(:c AS cidr), :f, 1)"),
            {"c": f"{C2}/32", "f": ["feodo"]},
        )
    yield engine
    await engine.dispose()


@pytest.mark.db
async def test_through_the_handler_with_the_real_detectors_and_the_api(
    engine: AsyncEngine, db: str, redis_url: str, redis_prefix: str
) -> None:
    """Forwarded Tetragon events of two clusters: an implant in /tmp calling a listed C2 makes the
    IOC chain (and, being the same image, the image chain); a `go run` binary calling a popular
    destination from both clusters (attack_rules flags it, intel does not) makes none."""
    detectors = DetectorSet.configure(disabled={"behaviour_profile", "workload_anomaly"})
    detectors.correlator = Correlator.from_patterns(None)
    sessions = make_session_factory(engine)
    handler = EventsHandler(sessions, detectors, cluster_id="hub")
    implant = [
        tetragon_connect("cluster-a", 0, "/tmp/.x/agent", C2, IMAGE),
        tetragon_connect("cluster-b", 20, "/tmp/.x/agent", C2, IMAGE),
    ]
    builds = [
        tetragon_connect("cluster-a", 5, "/tmp/go-build123/exe/main", POPULAR, "sha256:" + "e1" * 32),
        tetragon_connect("cluster-b", 25, "/tmp/go-build456/exe/main", POPULAR, "sha256:" + "f2" * 32),
    ]
    envelopes = [event_envelope(e) for e in sorted(implant + builds, key=lambda e: e.event_time)]
    deliveries = [Delivery(f"{i}-0", env, 1) for i, env in enumerate(envelopes)]
    await handler(deliveries)
    await handler([Delivery(d.entry_id, d.envelope, 2) for d in deliveries])  # redelivered
    flusher = CorrelationFlusher(sessions, detectors, cluster_id="hub", idle_seconds=1)
    await flusher.flush()
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT detector, category, cluster FROM analysis_findings ORDER BY category, cluster")
            )
        ).all()
    got = [tuple(r) for r in rows]
    assert got.count(("attack_rules", "networking_c2_communication", "cluster-a")) == 2  # implant + build
    assert got.count(("intel_match", "networking_c2_communication", "cluster-a")) == 1  # implant only
    chains = [r for r in got if r[0] == "correlation"]
    assert chains == [
        ("correlation", f"chain.{BY_IMAGE}", "cluster-a"),
        ("correlation", f"chain.{BY_IOC}", "cluster-a"),
    ]

    app = create_app(
        analysis_settings(database_url=db, redis_url=redis_url, redis_prefix=redis_prefix),
        auth=ApiAuthSettings(token_read=SecretStr(READ)),
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analysis", headers={"Authorization": f"Bearer {READ}"}
        ) as client:
            listed_chains = (await client.get("/v1/chains", params={"pattern": BY_IOC})).json()["items"]
            (chain,) = listed_chains
            assert chain["clusters"] == ["cluster-a", "cluster-b"]
            assert [s["cluster"] for s in chain["steps"]] == ["cluster-a", "cluster-b"]
            assert chain["join"] == {"key": "ioc", "value": C2}
            # a cluster filter finds a chain by any of its clusters, not only the first
            by_second = (await client.get("/v1/chains", params={"cluster": "cluster-b"})).json()["items"]
            assert {c["pattern"] for c in by_second} == {BY_IMAGE, BY_IOC}
            assert (await client.get("/v1/chains", params={"cluster": "cluster-z"})).json()["items"] == []
            one = (await client.get(f"/v1/chains/{chain['id']}")).json()
            assert one["clusters"] == ["cluster-a", "cluster-b"]

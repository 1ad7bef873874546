"""Lateral movement (``join: peer``): a connection a workload's profile never made, into another
pod's address (in another cluster, or in the same one), then attack behaviour in the pod at that
address. The
reached workload's address comes from its own Tetragon connections (sock_arg saddr) or Hubble DNS
flows, or from a Hubble flow into it (which names the pod at its destination), converted by
ingest's real adapters; the engine remembers it per pod and keeps it across a checkpoint restore."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from qcdr_analysis.correlation import Engine, load_patterns
from qcdr_analysis.correlation.checkpoint import RedisCheckpoint
from qcdr_analysis.correlation.correlator import Correlator
from qcdr_analysis.correlation.patterns import parse
from qcdr_analysis.detectors import behaviour
from qcdr_analysis.profiles.decisions import UNKNOWN_DESTINATION
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_ingest.dns.queries import convert_hubble
from qcdr_ingest.events.adapters.hubble import convert as hubble
from qcdr_ingest.events.adapters.tetragon import convert as tetragon

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PATTERN = "lateral_movement_between_clusters"
WEB_7 = "10.20.0.7"  # cluster-b's pod web-7 (Cluster Mesh: pod ranges do not overlap)
WEB_8 = "10.20.0.8"
_ids = count(1)


def _time(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def tcp_connect(
    cluster: str, seconds: float, pod: str, saddr: str, daddr: str, port: int = 8080
) -> SecurityEvent:
    """A Tetragon tcp_connect kprobe event (the shape `tetra getevents -o json` prints)."""
    n = next(_ids)
    raw = {
        "process_kprobe": {
            "process": {
                "exec_id": f"{cluster}:{pod}:{n}",
                "binary": "/usr/bin/curl",
                "arguments": f"http://{daddr}:{port}/",
                "pod": {
                    "namespace": "shop",
                    "name": pod,
                    "container": {"id": f"containerd://{cluster}-{pod}", "name": "app"},
                },
            },
            "function_name": "tcp_connect",
            "args": [
                {
                    "sock_arg": {
                        "family": "AF_INET",
                        "type": "SOCK_STREAM",
                        "protocol": "IPPROTO_TCP",
                        "saddr": saddr,
                        "daddr": daddr,
                        "sport": 40000 + n,
                        "dport": port,
                    }
                }
            ],
            "action": "KPROBE_ACTION_POST",
            "policy_name": "connect",
        },
        "node_name": f"{cluster}-node-1",
        "time": _time(seconds),
    }
    return tetragon(raw, cluster)


def dns_query(cluster: str, seconds: float, pod: str, address: str) -> SecurityEvent:
    """A Hubble DNS request flow from the pod (its address is the flow's source)."""
    flow = {
        "time": _time(seconds),
        "uuid": f"00000000-0000-4000-8000-{next(_ids):012d}",
        "verdict": "FORWARDED",
        "IP": {"source": address, "destination": "10.96.0.10", "ipVersion": "IPv4"},
        "source": {"namespace": "shop", "pod_name": pod},
        "destination": {"namespace": "kube-system", "pod_name": "coredns-abc"},
        "Type": "L7",
        "l7": {"type": "REQUEST", "dns": {"query": "api.shop.svc.cluster.local.", "qtypes": ["A"]}},
        "is_reply": False,
    }
    event = convert_hubble(flow, cluster)
    assert event.workload.pod == pod
    return event


def hubble_syn(
    cluster: str, seconds: float, pod: str, saddr: str, daddr: str, reached: str, reached_cluster: str = ""
) -> SecurityEvent:
    """A Hubble SYN from ``pod`` to the pod ``reached`` (the flow names both endpoints)."""
    n = next(_ids)
    flow = {
        "time": _time(seconds),
        "verdict": "FORWARDED",
        "IP": {"source": saddr, "destination": daddr, "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": 40000 + n, "destination_port": 5432, "flags": {"SYN": True}}},
        "source": {"namespace": "shop", "pod_name": pod},
        "destination": {"namespace": "shop", "pod_name": reached, "cluster_name": reached_cluster},
        "Type": "L3_L4",
        "traffic_direction": "EGRESS",
        "is_reply": False,
    }
    event = hubble({"flow": flow}, cluster)
    assert event.category == "network_flow"
    return event


def shell(cluster: str, seconds: float, pod: str, severity: str = "high") -> SecurityEvent:
    """An interactive shell in the pod, as attack_rules tags it (T1059.004); no address on it."""
    return SecurityEvent.model_validate(
        {
            "id": f"lm-{next(_ids):06d}",
            "source": "falco",
            "category": "alert",
            "severity": severity,
            "event_time": T0 + timedelta(seconds=seconds),
            "workload": {
                "cluster": cluster,
                "namespace": "shop",
                "pod": pod,
                "container": "app",
                "container_id": f"{cluster}-{pod}",
            },
            "process": {"path": "/bin/sh", "name": "sh"},
            "techniques": ["T1059.004"],
        }
    )


def unknown_destination(e: SecurityEvent) -> Finding:
    """What the behaviour profile raises for a destination the workload never contacted."""
    return Finding(
        id=f"f-unknown-{e.id}",
        kind=FindingKind.ANOMALY,
        detector=behaviour.NAME,
        category=UNKNOWN_DESTINATION,
        severity=e.severity,
        event_time=e.event_time,
        evidence_event_ids=(e.id,),
        workload=e.workload,
        network=e.network,
        source=e.source,
    )


def run(engine: Engine, *batches: tuple[list[SecurityEvent], list[Finding]]) -> list[Finding]:
    out: list[Finding] = []
    for events, findings in batches:
        out += engine.feed(events, findings)
    return out + engine.flush()


def chains(found: list[Finding]) -> list[Finding]:
    return [c for c in found if c.category == f"chain.{PATTERN}"]


@pytest.fixture(scope="module")
def patterns() -> list[Any]:
    return load_patterns()


def _attack(
    reached: str = "web-7", *, shell_at: float = 60, attacker_cluster: str = "cluster-a"
) -> tuple[list[SecurityEvent], list[Finding]]:
    learned = tcp_connect("cluster-b", 0, "web-7", WEB_7, "10.20.5.1")  # web-7 calls its database
    other = tcp_connect("cluster-b", 1, "web-8", WEB_8, "10.20.5.1")
    hop = tcp_connect(attacker_cluster, 30, "api-1", "10.10.0.4", WEB_7)
    return [learned, other, hop, shell("cluster-b", shell_at, reached)], [unknown_destination(hop)]


def test_a_new_connection_into_another_cluster_then_a_shell_there_is_one_chain(patterns: list[Any]) -> None:
    events, findings = _attack()
    found = run(Engine(patterns), (events, findings))
    (chain,) = chains(found)
    assert found == [chain]
    assert chain.attributes["join"] == {"key": "peer", "value": WEB_7}
    assert chain.attributes["clusters"] == ["cluster-a", "cluster-b"]
    steps = chain.attributes["steps"]
    assert [(s["cluster"], s["workload"]["pod"]) for s in steps] == [
        ("cluster-a", "api-1"),
        ("cluster-b", "web-7"),
    ]
    assert steps[0]["finding_ids"] == [findings[0].id]
    assert "T1059" in chain.techniques or "T1059.004" in chain.techniques
    assert chain.workload.cluster == "cluster-a"


def test_an_ordinary_call_between_clusters_is_no_chain(patterns: list[Any]) -> None:
    """A destination the profile knows raises no finding, so the call starts nothing."""
    events, _ = _attack()
    assert chains(run(Engine(patterns), (events, []))) == []


@pytest.mark.parametrize(
    ("reached", "shell_at", "attacker_cluster", "why"),
    [
        ("web-8", 60, "cluster-a", "the shell is in another pod than the one reached"),
        ("web-7", 20, "cluster-a", "the shell came before the connection"),
        ("web-7", 30 + 15 * 60 + 1, "cluster-a", "the shell came after the 15-minute window"),
        ("web-7", 60, "cluster-b", "connection and shell in one cluster"),
    ],
)
def test_look_alikes_are_no_chain(
    patterns: list[Any], reached: str, shell_at: float, attacker_cluster: str, why: str
) -> None:
    events, findings = _attack(reached, shell_at=shell_at, attacker_cluster=attacker_cluster)
    assert chains(run(Engine(patterns), (events, findings))) == [], why


def test_a_low_severity_shell_is_no_chain(patterns: list[Any]) -> None:
    events, findings = _attack()
    events[-1] = shell("cluster-b", 60, "web-7", severity="low")
    assert chains(run(Engine(patterns), (events, findings))) == []


def test_an_address_never_seen_joins_nothing(patterns: list[Any]) -> None:
    """Without a connection or DNS query from web-7 the hub cannot tell its address."""
    hop = tcp_connect("cluster-a", 30, "api-1", "10.10.0.4", WEB_7)
    found = run(Engine(patterns), ([hop, shell("cluster-b", 60, "web-7")], [unknown_destination(hop)]))
    assert chains(found) == []


def test_the_address_learned_from_a_hubble_dns_query(patterns: list[Any]) -> None:
    asked = dns_query("cluster-b", 0, "web-7", WEB_7)
    hop = tcp_connect("cluster-a", 30, "api-1", "10.10.0.4", WEB_7)
    found = run(Engine(patterns), ([asked, hop, shell("cluster-b", 60, "web-7")], [unknown_destination(hop)]))
    (chain,) = chains(found)
    assert chain.attributes["join"]["value"] == WEB_7


def test_a_pod_that_moved_to_a_new_address_is_joined_on_the_new_one(patterns: list[Any]) -> None:
    old = tcp_connect("cluster-b", 0, "web-7", "10.20.0.99", "10.20.5.1")
    new = tcp_connect("cluster-b", 5, "web-7", WEB_7, "10.20.5.1")
    hop_old = tcp_connect("cluster-a", 30, "api-1", "10.10.0.4", "10.20.0.99")
    found = run(
        Engine(patterns),
        ([old, new, hop_old, shell("cluster-b", 60, "web-7")], [unknown_destination(hop_old)]),
    )
    assert chains(found) == []


def test_exactly_once_across_a_checkpoint_restore_with_the_learned_address(patterns: list[Any]) -> None:
    events, findings = _attack()
    first = Engine(patterns)
    assert run_without_flush(first, (events[:3], findings)) == []
    snapshot = first.snapshot()
    assert sorted(snapshot["addresses"].values()) == ["10.10.0.4", WEB_7, WEB_8]

    restored = Engine(patterns)
    restored.restore(snapshot)
    # the batch is redelivered after the restart, then the shell arrives
    found = run(restored, (events[:3], findings), ([events[3]], []))
    assert len(chains(found)) == 1
    again = Engine(patterns)
    again.restore(restored.snapshot())
    assert chains(run(again, (events, findings))) == []


def run_without_flush(engine: Engine, *batches: tuple[list[SecurityEvent], list[Finding]]) -> list[Finding]:
    out: list[Finding] = []
    for events, findings in batches:
        out += engine.feed(events, findings)
    return out


def test_the_address_cache_is_bounded(patterns: list[Any]) -> None:
    engine = Engine(patterns, address_cache=2)
    for i in range(5):
        engine.feed([tcp_connect("cluster-b", i, f"web-{i}", f"10.20.1.{i}", "10.20.5.1")])
    assert list(engine.snapshot()["addresses"]) == [
        "cluster-b/shop/web-3",
        "cluster-b/shop/web-4",
    ]


def test_a_checkpoint_carries_only_the_addresses_that_changed(patterns: list[Any]) -> None:
    engine = Engine(patterns, address_cache=2)
    engine.snapshot()
    web = [tcp_connect("cluster-b", i, f"web-{i}", f"10.20.1.{i}", "10.20.5.1") for i in range(3)]
    engine.feed(web[:1])
    assert engine.checkpoint()["addresses"] == {"cluster-b/shop/web-0": "10.20.1.0"}
    engine.feed([tcp_connect("cluster-b", 5, "web-0", "10.20.1.0", "10.20.5.2")])
    assert engine.checkpoint()["addresses"] == {}  # the same address again: nothing to write
    engine.feed(web[1:])
    assert engine.checkpoint()["addresses"] == {
        "cluster-b/shop/web-0": None,  # the oldest, evicted
        "cluster-b/shop/web-1": "10.20.1.1",
        "cluster-b/shop/web-2": "10.20.1.2",
    }


async def test_the_learned_address_survives_a_redis_checkpoint_restart(
    redis_client: Any, redis_prefix: str
) -> None:
    events, findings = _attack()
    checkpoint = RedisCheckpoint(redis_client, f"{redis_prefix}-lm")
    try:
        first = Correlator.from_patterns(None, checkpoint)
        await first.restore()
        assert first.feed(events[:3], findings) == []
        await first.checkpoint()  # committed; the process stops

        second = Correlator.from_patterns(None, checkpoint)
        await second.restore()
        emitted = second.feed(events[3:], []) + second.flush()
        assert [c.category for c in emitted] == [f"chain.{PATTERN}"]
    finally:
        await checkpoint.clear()


PODS = "lateral_movement_between_pods"


def test_a_new_connection_to_a_pod_then_a_shell_there_in_one_cluster(patterns: list[Any]) -> None:
    learned = tcp_connect("prod", 0, "db-0", "10.0.9.9", "10.0.5.1")
    hop = tcp_connect("prod", 10, "api-1", "10.0.1.1", "10.0.9.9", port=5432)
    found = run(Engine(patterns), ([learned, hop, shell("prod", 20, "db-0")], [unknown_destination(hop)]))
    (chain,) = [c for c in found if c.category == f"chain.{PODS}"]
    assert [s["workload"]["pod"] for s in chain.attributes["steps"]] == ["api-1", "db-0"]
    # scoped by cluster: the same private address elsewhere is another pod
    assert chain.attributes["join"] == {"key": "peer", "value": "prod/10.0.9.9"}
    assert chain.workload.pod == "db-0"  # the finding stands in the reached pod
    assert chains(found) == []  # one cluster: not the cross-cluster pattern


def test_the_same_private_address_in_another_cluster_is_another_pod(patterns: list[Any]) -> None:
    """Clusters without Cluster Mesh reuse pod ranges: 10.0.9.9 in staging is not prod's db-0."""
    learned = tcp_connect("prod", 0, "db-0", "10.0.9.9", "10.0.5.1")
    hop = tcp_connect("staging", 10, "api-1", "10.0.1.1", "10.0.9.9", port=5432)
    found = run(Engine(patterns), ([learned, hop, shell("prod", 20, "db-0")], [unknown_destination(hop)]))
    assert [c for c in found if c.category == f"chain.{PODS}"] == []


def test_a_peer_pattern_of_ones_own() -> None:
    (pattern,) = parse(
        """
name: pod_to_pod
description: a new connection to a pod, then a shell in it
severity: high
maxspan: 10m
join: peer
steps:
  - {name: hop, category: anomaly.unknown_destination}
  - {name: shell, technique: T1059}
""",
        "test.yaml",
    )
    learned = tcp_connect("prod", 0, "db-0", "10.0.9.9", "10.0.5.1")
    hop = tcp_connect("prod", 10, "api-1", "10.0.1.1", "10.0.9.9", port=5432)
    found = run(Engine([pattern]), ([learned, hop, shell("prod", 20, "db-0")], [unknown_destination(hop)]))
    (chain,) = found
    assert [s["workload"]["pod"] for s in chain.attributes["steps"]] == ["api-1", "db-0"]


def test_a_hubble_flow_names_the_reached_pod_before_it_says_anything(patterns: list[Any]) -> None:
    """db-0 made no connection and asked nothing: the flow into it tells its address."""
    hop = hubble_syn("prod", 10, "api-1", "10.0.1.1", "10.0.9.9", reached="db-0")
    found = run(Engine(patterns), ([hop, shell("prod", 20, "db-0")], [unknown_destination(hop)]))
    (chain,) = [c for c in found if c.category == f"chain.{PODS}"]
    assert [s["workload"]["pod"] for s in chain.attributes["steps"]] == ["api-1", "db-0"]
    assert chain.attributes["join"] == {"key": "peer", "value": "prod/10.0.9.9"}
    # a shell in another pod is still no chain
    other = hubble_syn("prod", 10, "api-1", "10.0.1.1", "10.0.9.9", reached="db-0")
    found = run(Engine(patterns), ([other, shell("prod", 20, "db-1")], [unknown_destination(other)]))
    assert [c for c in found if c.category == f"chain.{PODS}"] == []


def test_a_hubble_flow_across_cluster_mesh_names_the_reached_cluster(patterns: list[Any]) -> None:
    hop = hubble_syn(
        "cluster-a", 30, "api-1", "10.10.0.4", WEB_7, reached="web-7", reached_cluster="cluster-b"
    )
    found = run(Engine(patterns), ([hop, shell("cluster-b", 60, "web-7")], [unknown_destination(hop)]))
    (chain,) = chains(found)
    assert chain.attributes["clusters"] == ["cluster-a", "cluster-b"]
    assert chain.attributes["join"]["value"] == WEB_7


def test_addresses_learned_from_both_ends_of_a_flow_are_checkpointed(patterns: list[Any]) -> None:
    engine = Engine(patterns)
    engine.snapshot()
    engine.feed([hubble_syn("prod", 0, "api-1", "10.0.1.1", "10.0.9.9", reached="db-0")])
    assert engine.checkpoint()["addresses"] == {"prod/shop/api-1": "10.0.1.1", "prod/shop/db-0": "10.0.9.9"}

"""Resolve-and-deny against a real DNS server on 127.0.0.1 (dnslib), answers with fixed TTLs."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qcdr_common.testing.dns_zone import Zone, serve_zone
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.dns.resolve_deny import ResolveDeny, ResolveDenyConfig
from qcdr_response.policies.targets import CiliumTarget, TetragonTarget
from qcdr_response.policies.validator_cilium import validate_cilium_policy
from qcdr_response.policies.validator_tetragon import validate_tracing_policy

# name -> [(qtype, rdata, ttl)]; documentation ranges (RFC 5737 / 3849) stand in for public IPs
ZONE: dict[str, list[tuple[str, str, int]]] = {
    "pool.bad.example.": [
        ("A", "203.0.113.10", 300),
        ("A", "203.0.113.11", 300),
        ("AAAA", "2001:db8::10", 300),
    ],
    "fast.bad.example.": [("A", "198.51.100.7", 5)],
    "alias.bad.example.": [("CNAME", "fast.bad.example.", 600)],
    "sinkholed.bad.example.": [("A", "0.0.0.0", 300), ("A", "10.1.2.3", 300)],
    "v6only.bad.example.": [("AAAA", "2001:db8::66", 120)],
}


@pytest.fixture
def dns_server() -> Iterator[tuple[int, Zone]]:
    with serve_zone(dict(ZONE)) as served:
        yield served


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _deny(port: int, clock: Clock, **overrides: object) -> ResolveDeny:
    settings: dict[str, object] = {"nameservers": ["127.0.0.1"], "port": port, "timeout_s": 2, "min_ttl_s": 0}
    config = ResolveDenyConfig.model_validate(settings | overrides)
    return ResolveDeny(config, clock=clock)


async def test_resolves_a_and_aaaa(dns_server: tuple[int, Zone]) -> None:
    port, server = dns_server
    deny = _deny(port, Clock())
    report = await deny.refresh(["pool.bad.example", "v6only.bad.example"])
    assert report.resolved == {
        "pool.bad.example": ["203.0.113.10", "203.0.113.11", "2001:db8::10"],
        "v6only.bad.example": ["2001:db8::66"],
    }
    assert report.failed == {}
    assert deny.cidrs() == ["203.0.113.10/32", "203.0.113.11/32", "2001:db8::10/128", "2001:db8::66/128"]
    assert "A pool.bad.example." in server.queries
    assert "AAAA pool.bad.example." in server.queries


async def test_ttl_expiry_drops_addresses(dns_server: tuple[int, Zone]) -> None:
    port, _ = dns_server
    clock = Clock()
    deny = _deny(port, clock)
    await deny.refresh(["pool.bad.example", "fast.bad.example"])
    assert "198.51.100.7/32" in deny.cidrs()
    clock.now += 6  # past fast's 5 s TTL, well inside pool's 300 s
    assert deny.expire() == 1
    assert deny.cidrs() == ["203.0.113.10/32", "203.0.113.11/32", "2001:db8::10/128"]
    clock.now += 300
    assert deny.expire() == 3
    assert deny.cidrs() == []


async def test_ttl_floor_and_reresolution_extend(dns_server: tuple[int, Zone]) -> None:
    port, _ = dns_server
    clock = Clock()
    deny = _deny(port, clock, min_ttl_s=60)
    await deny.refresh(["fast.bad.example"])
    clock.now += 30  # TTL 5 s, but the floor keeps it for 60 s
    assert deny.expire() == 0
    await deny.refresh(["fast.bad.example"])  # seen again: 60 s from now
    clock.now += 59
    assert deny.expire() == 0
    clock.now += 2
    assert deny.expire() == 1


async def test_cname_chain_uses_lowest_ttl(dns_server: tuple[int, Zone]) -> None:
    port, _ = dns_server
    clock = Clock()
    deny = _deny(port, clock)
    report = await deny.refresh(["alias.bad.example"])
    assert report.resolved["alias.bad.example"] == ["198.51.100.7"]
    clock.now += 6  # the CNAME says 600 s, the address 5 s
    assert deny.expire() == 1


async def test_nxdomain_keeps_earlier_addresses_and_never_block_is_dropped(
    dns_server: tuple[int, Zone],
) -> None:
    port, _ = dns_server
    deny = _deny(port, Clock(), never_block=["203.0.113.11/32"])
    report = await deny.refresh(["pool.bad.example", "gone.bad.example", "sinkholed.bad.example"])
    assert report.failed == {"gone.bad.example": "NXDOMAIN"}
    assert report.dropped == {
        "pool.bad.example": ["203.0.113.11"],
        "sinkholed.bad.example": ["0.0.0.0", "10.1.2.3"],
    }
    assert deny.cidrs() == ["203.0.113.10/32", "2001:db8::10/128"]


async def test_unreachable_resolver_is_a_failure_not_an_exception() -> None:
    # a port nothing listens on: the query times out quickly
    deny = ResolveDeny(ResolveDenyConfig(nameservers=["127.0.0.1"], port=9, timeout_s=0.3), clock=Clock())
    report = await deny.refresh(["pool.bad.example"])
    assert report.failed["pool.bad.example"] in {"Timeout", "LifetimeTimeout", "NoNameservers"}
    assert deny.cidrs() == []


async def test_manifests_shape(dns_server: tuple[int, Zone]) -> None:
    port, _ = dns_server
    deny = _deny(port, Clock(), group_size=2, tetragon=True)
    await deny.refresh(["pool.bad.example", "v6only.bad.example"])
    docs = deny.manifests()
    assert [d["kind"] for d in docs] == [
        "CiliumCIDRGroup",
        "CiliumCIDRGroup",
        "CiliumClusterwideNetworkPolicy",
        "TracingPolicy",
    ]
    groups = [d["spec"]["externalCIDRs"] for d in docs[:2]]
    assert groups == [["203.0.113.10/32", "203.0.113.11/32"], ["2001:db8::10/128", "2001:db8::66/128"]]
    policy = docs[2]["spec"]
    assert "toFQDNs" not in str(policy)
    assert policy["enableDefaultDeny"] == {"egress": False, "ingress": False}
    assert policy["egressDeny"] == [
        {"toCIDRSet": [{"cidrGroupRef": "qcdr-dns-blocked-000"}, {"cidrGroupRef": "qcdr-dns-blocked-001"}]}
    ]
    selector = docs[3]["spec"]["kprobes"][0]["selectors"][0]
    assert selector["matchArgs"] == [{"index": 0, "operator": "DAddr", "values": [*groups[0], *groups[1]]}]


async def test_empty_cache_still_emits_a_valid_empty_group() -> None:
    deny = ResolveDeny(ResolveDenyConfig(tetragon=True), clock=Clock())
    docs = deny.manifests()
    assert [d["kind"] for d in docs] == ["CiliumCIDRGroup", "CiliumClusterwideNetworkPolicy"]
    assert docs[0]["spec"]["externalCIDRs"] == []


@pytest.mark.shared
@pytest.mark.parametrize("cilium", ["1.17", "1.18"])
async def test_output_validates(dns_server: tuple[int, Zone], shared_path: Path, cilium: str) -> None:
    port, _ = dns_server
    deny = _deny(port, Clock(), tetragon=True, cilium_version=cilium, tetragon_action="Sigkill")
    await deny.refresh(list(ZONE))
    docs = deny.manifests()
    validator = ManifestValidator(shared_path)
    api_versions = {d["apiVersion"] for d in docs if d["kind"] == "CiliumCIDRGroup"}
    assert api_versions == ({"cilium.io/v2alpha1"} if cilium == "1.17" else {"cilium.io/v2"})
    for doc in [*docs, *ResolveDeny(ResolveDenyConfig(), clock=Clock()).manifests()]:
        assert validator.errors(doc) == [], doc["kind"]
        if doc["kind"] == "CiliumClusterwideNetworkPolicy":
            issues = validate_cilium_policy(doc, CiliumTarget(version=cilium))
        elif doc["kind"] == "TracingPolicy":
            issues = validate_tracing_policy(doc, TetragonTarget(version="1.5"))
        else:
            continue
        assert [i for i in issues if i.severity == "error"] == []


async def test_state_survives_a_restart_and_expires_on_time(dns_server: tuple[int, Zone]) -> None:
    port, _ = dns_server
    clock = Clock()
    first = _deny(port, clock)
    await first.refresh(["pool.bad.example", "fast.bad.example"])
    saved = first.to_state()
    assert saved["198.51.100.7"]["domains"] == ["fast.bad.example"]
    clock.now += 6  # fast's 5 s TTL is over by the next run
    later = _deny(port, clock)
    assert later.restore(saved | {"bad": {"expires_at": "x"}, "10.0.0.9": saved["203.0.113.10"]}) == 3
    assert later.cidrs() == ["203.0.113.10/32", "203.0.113.11/32", "2001:db8::10/128"]
    # a name that stops resolving keeps its addresses until their TTL, then they go
    report = await later.refresh(["gone.bad.example"])
    assert report.failed == {"gone.bad.example": "NXDOMAIN"}
    assert len(later.cidrs()) == 3
    clock.now += 300
    assert later.expire() == 3


async def test_names_are_resolved_concurrently() -> None:
    # a name server on 127.0.0.1 that never answers: every name waits out its timeout, all at once
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        deny = _deny(silent.getsockname()[1], Clock(), timeout_s=0.5, concurrency=64)
        started = time.monotonic()
        report = await deny.refresh([f"n{i}.bad.example" for i in range(40)])
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert set(report.failed.values()) == {"LifetimeTimeout"}
    assert len(report.failed) == 40
    assert elapsed < 5  # one at a time: 40 names x A and AAAA x 0.5 s = 40 s

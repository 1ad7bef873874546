"""IOC extraction: only public destinations, never the victim, private ranges and never-block lists."""

import pytest
from pydantic import ValidationError
from qcdr_response.policies.config import GenerationConfig
from qcdr_response.policies.iocs import extract_iocs

from tests.response.factories import make_event


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("10.1.2.3", "ip:private"),
        ("172.20.0.1", "ip:private"),
        ("192.168.1.1", "ip:private"),
        ("127.0.0.1", "ip:loopback"),
        ("169.254.169.254", "ip:link-local"),
        ("100.64.1.1", "ip:not-global"),
        ("224.0.0.251", "ip:multicast"),
        ("240.0.0.1", "ip:reserved"),
        ("0.0.0.0", "ip:unspecified"),
        ("192.0.2.10", "ip:private"),
        ("198.51.100.7", "ip:private"),
        ("::1", "ip:loopback"),
        ("fe80::1", "ip:link-local"),
        ("fd00::1", "ip:private"),
        ("2001:db8::1", "ip:private"),
        ("::ffff:10.0.0.1", "ip:private"),
    ],
)
def test_non_public_addresses_are_excluded_with_a_reason(ip: str, reason: str) -> None:
    iocs = extract_iocs([make_event(network={"ip": ip})], GenerationConfig())
    assert not iocs.ips
    assert iocs.excluded == {reason: 1}


def test_public_addresses_and_the_original_prefix_bug() -> None:
    # 172.2.x.x and 172.200.x.x are public; the original's string prefix "172.2" treated them as private.
    events = [
        make_event(network={"ip": ip}) for ip in ("172.2.3.4", "172.200.1.1", "8.8.4.4", "2606:4700::1111")
    ]
    iocs = extract_iocs(events, GenerationConfig())
    assert set(iocs.ips) == {"172.2.3.4", "172.200.1.1", "8.8.4.4", "2606:4700::1111"}


def test_never_block_list() -> None:
    cfg = GenerationConfig(never_block=("8.8.8.0/24",))
    iocs = extract_iocs([make_event(network={"ip": "8.8.8.8"})], cfg)
    assert not iocs.ips
    assert iocs.excluded == {"ip:never-block": 1}


def test_ports_only_from_the_suspicious_set_and_domains_kept_as_data() -> None:
    events = [
        make_event(network={"ip": "1.1.1.1", "port": 443, "domain": "Pool.Example.ORG."}),
        make_event(network={"ip": "1.1.1.1", "port": 4444}),
    ]
    iocs = extract_iocs(events, GenerationConfig())
    assert list(iocs.ports) == [4444]
    assert list(iocs.domains) == ["pool.example.org"]
    assert iocs.ips["1.1.1.1"].sources == {events[0].id, events[1].id}


@pytest.mark.parametrize("port", [53, 80, 443, 6443, 8080, 8443])
def test_ordinary_ports_can_never_be_suspicious(port: int) -> None:
    with pytest.raises(ValidationError, match="ordinary traffic"):
        GenerationConfig(suspicious_ports=frozenset({4444, port}))


def test_suspicious_ports_must_fit_one_connect_hook() -> None:
    with pytest.raises(ValidationError, match="at most 16"):
        GenerationConfig(suspicious_ports=frozenset(range(10000, 10017)))
    assert len(GenerationConfig(suspicious_ports=frozenset(range(10000, 10016))).suspicious_ports) == 16

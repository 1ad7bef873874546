"""Network indicators from findings: destination IPs, suspicious ports and domains, with provenance.

Only the workload's *destination* counts (the normalizer fills ``SecurityEvent.network`` from
``destinationIp`` and ``networkInformation.*`` only; ``triggeredResource`` may be the victim).
Addresses that are not globally routable, and everything in the never-block list, are excluded
and counted by reason, never silently dropped.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies.config import GenerationConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Indicator:
    value: str
    sources: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    def add(self, event: SecurityEvent) -> None:
        self.sources.add(event.id)
        self.categories.add(event.category)
        t = event.event_time
        self.first_seen = t if self.first_seen is None or t < self.first_seen else self.first_seen
        self.last_seen = t if self.last_seen is None or t > self.last_seen else self.last_seen

    def as_dict(self, max_sources: int) -> dict[str, Any]:
        return {
            "value": self.value,
            "hits": len(self.sources),
            "categories": sorted(self.categories),
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "sources": sorted(self.sources)[:max_sources],
        }


@dataclass
class IocSet:
    ips: dict[str, Indicator] = field(default_factory=dict)
    ports: dict[int, Indicator] = field(default_factory=dict)
    domains: dict[str, Indicator] = field(default_factory=dict)
    excluded: Counter[str] = field(default_factory=Counter)
    source_ids: set[str] = field(default_factory=set)

    def sorted_ips(self) -> list[IPAddress]:
        return sorted((ipaddress.ip_address(v) for v in self.ips), key=lambda a: (a.version, int(a)))

    def as_dict(self, max_sources: int = 20) -> dict[str, Any]:
        return {
            "ips": [self.ips[str(ip)].as_dict(max_sources) for ip in self.sorted_ips()],
            "ports": [self.ports[p].as_dict(max_sources) for p in sorted(self.ports)],
            "domains": [self.domains[d].as_dict(max_sources) for d in sorted(self.domains)],
            "excluded": dict(sorted(self.excluded.items())),
        }


def non_blockable_reason(
    ip: IPAddress, never_block: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str | None:
    """Why ``ip`` must not be blocked, or None when it is a public, blockable address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return non_blockable_reason(ip.ipv4_mapped, never_block)
    for net in never_block:
        if ip.version == net.version and ip in net:
            return "never-block"
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    )
    for reason, hit in checks:
        if hit:
            return reason
    # is_global is False for CGNAT (100.64/10) and documentation/benchmark ranges not caught above.
    return None if ip.is_global else "not-global"


def extract_iocs(events: Iterable[SecurityEvent], config: GenerationConfig) -> IocSet:
    never = [ipaddress.ip_network(c) for c in config.never_block]
    out = IocSet()
    for event in events:
        net = event.network
        if net is None:
            continue
        if net.ip is not None:
            reason = non_blockable_reason(net.ip, never)
            if reason:
                out.excluded[f"ip:{reason}"] += 1
            else:
                key = str(net.ip)
                out.ips.setdefault(key, Indicator(key)).add(event)
                out.source_ids.add(event.id)
        if net.port is not None:
            if net.port in config.suspicious_ports:
                out.ports.setdefault(net.port, Indicator(str(net.port))).add(event)
                out.source_ids.add(event.id)
            else:
                out.excluded["port:not-suspicious"] += 1
        if net.domain:
            domain = net.domain.lower().rstrip(".")
            out.domains.setdefault(domain, Indicator(domain)).add(event)
    return out

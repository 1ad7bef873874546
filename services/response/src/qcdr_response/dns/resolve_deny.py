"""Resolve-and-deny: blocked domains -> their current A/AAAA addresses -> a CIDR group Cilium denies.

Cilium cannot deny by name: ``toFQDNs`` exists only under ``egress`` (allow), never under
``egressDeny``. So blocked names are resolved here, against a configured resolver (the cluster's
DNS, so the answers are the ones pods get), and every address is kept until its TTL runs out. The
output is one or more ``CiliumCIDRGroup`` objects of ``/32`` and ``/128`` prefixes plus one
``CiliumClusterwideNetworkPolicy`` that denies egress to them (``egressDeny.toCIDRSet`` with
``cidrGroupRef``) with default-deny off, so nothing else is cut; optionally a Tetragon
``TracingPolicy`` on ``tcp_connect`` with the same addresses (``DAddr``), for hosts Cilium does
not police or to see which process connected.

TTL: an address stays for its TTL (the lowest along a CNAME chain), clamped to
``[min_ttl_s, max_ttl_s]``, after the last answer that contained it. The floor keeps fast-rotating
names (TTL 0-30 s) from making the group churn faster than it can be applied; the ceiling bounds how
long an address that left the name's answers stays blocked. A name that fails to resolve keeps its
addresses until they expire (a resolver hiccup must not unblock it). Addresses in never-block ranges
(private, loopback, link-local, sinkholes such as ``0.0.0.0``, plus configured cluster and
allow-listed CIDRs) are dropped: denying them would cut the cluster, not the threat.
What this does not stop is in docs/DNS.md (DoH/DoT, shared CDN addresses, TTL races).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
from pydantic import BaseModel, ConfigDict, Field

from qcdr_response.policies import metadata as md
from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.threat_intel import cidr_group_api_version

PIPELINE = "dns-resolve-deny"
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_resolvers(values: Iterable[str]) -> tuple[list[str], int]:
    """(addresses, port) from ``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` entries; one port for all
    (dnspython asks every resolver on the same port). ``ValueError`` says which entry is wrong."""
    hosts: list[str] = []
    ports: set[int] = set()
    for raw in values:
        host, port = raw, "53"
        if raw.startswith("["):
            host, _, rest = raw[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif raw.count(":") == 1:  # IPv4:PORT; a bare IPv6 address has several colons
            host, _, port = raw.partition(":")
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:  # int("²") raises
            raise ValueError(f"{raw!r}: the port must be 1-65535")
        try:
            hosts.append(str(ipaddress.ip_address(host)))
        except ValueError:
            raise ValueError(f"{raw!r}: not an IP address (or IP:PORT)") from None
        ports.add(int(port))
    if len(ports) > 1:
        raise ValueError("all resolvers must use the same port")
    return hosts, ports.pop() if ports else 53


def system_nameservers() -> tuple[str, ...]:
    """The resolvers this process uses (a pod's: the cluster DNS), read from /etc/resolv.conf."""
    try:
        return tuple(str(ns) for ns in dns.resolver.Resolver(configure=True).nameservers)
    except dns.resolver.NoResolverConfiguration:
        return ()


# Suffixes that only resolve inside a cluster, a cloud or a LAN: never a public name to deny.
LOCAL_SUFFIXES = (".internal", ".local", ".localhost", ".localdomain", ".svc", ".arpa", ".lan", ".home")


def public_name(name: str) -> bool:
    """Whether ``name`` (lower case, no trailing dot) can resolve publicly (a CDR finding may name
    ``metadata.google.internal`` or a ``*.svc.cluster.local`` service)."""
    return "." in name and not name.endswith(LOCAL_SUFFIXES)


class ResolveDenyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nameservers: list[str] = Field(default_factory=lambda: ["127.0.0.1"], min_length=1)
    port: int = Field(default=53, ge=1, le=65535)
    timeout_s: float = Field(default=2.0, gt=0)
    min_ttl_s: int = Field(default=60, ge=0)
    max_ttl_s: int = Field(default=3600, ge=1)
    never_block: list[str] = Field(
        default_factory=list,
        description="Cluster, service and allow-listed CIDRs, on top of the built-in ranges.",
    )
    group_name: str = "qcdr-dns-blocked"
    group_size: int = Field(default=5000, ge=1, le=50_000, description="Addresses per CiliumCIDRGroup.")
    policy_name: str = "qcdr-dns-resolve-deny"
    cilium_version: str = "1.17"
    tetragon: bool = False
    tetragon_action: Literal["Post", "Sigkill"] = Field(
        default="Post",
        description="tcp_connect cannot be overridden: Post records, Sigkill kills the process.",
    )
    tetragon_max_addresses: int = Field(default=1024, ge=1)
    concurrency: int = Field(
        default=32,
        ge=1,
        le=512,
        description="Names resolved at once (a slow name must not hold up the rest).",
    )


@dataclass(slots=True)
class Entry:
    expires_at: float
    domains: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class RefreshReport:
    resolved: dict[str, list[str]]  # domain -> addresses in this round's answers (kept ones only)
    failed: dict[str, str]  # domain -> reason (NXDOMAIN, timeout, ...)
    dropped: dict[str, list[str]]  # domain -> addresses refused as never-block
    expired: int


class ResolveDeny:
    """The address cache and the manifests built from it; ``clock`` is epoch seconds."""

    def __init__(
        self,
        config: ResolveDenyConfig,
        *,
        resolver: dns.asyncresolver.Resolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.resolver = resolver or self._resolver(config)
        self.entries: dict[str, Entry] = {}
        self.never_block: list[IpNetwork] = [
            ipaddress.ip_network(c) for c in (*tg.NON_PUBLIC_CIDRS, *config.never_block)
        ]

    @staticmethod
    def _resolver(config: ResolveDenyConfig) -> dns.asyncresolver.Resolver:
        # configure=False: never read /etc/resolv.conf; the resolver is what the config names
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(config.nameservers)
        resolver.port = config.port
        resolver.lifetime = config.timeout_s
        resolver.timeout = config.timeout_s
        return resolver

    def blocked(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return not any(ip.version == net.version and ip in net for net in self.never_block)

    async def _lookup(self, name: str, rdtype: str) -> tuple[list[str], int]:
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return [], 0  # the name exists without records of this type: not a failure
        if answer.rrset is None:
            return [], 0
        # the lowest TTL along a CNAME chain: the pod's resolver forgets the chain that soon too
        ttl = answer.chaining_result.minimum_ttl if answer.chaining_result else answer.rrset.ttl
        return [rdata.address for rdata in answer], int(ttl)

    async def _resolve(self, domain: str) -> tuple[list[tuple[list[str], int]], str | None]:
        """(addresses and TTL per record type answered, failure reason or None) for one name."""
        answers: list[tuple[list[str], int]] = []
        failure: str | None = None
        for rdtype in ("A", "AAAA"):
            try:
                answers.append(await self._lookup(domain, rdtype))
            except dns.resolver.NXDOMAIN:
                return [], "NXDOMAIN"
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                failure = type(exc).__name__
        return answers, failure

    async def refresh(self, domains: Iterable[str]) -> RefreshReport:
        """Resolve every domain (A and AAAA, ``concurrency`` names at once), add its addresses,
        then drop expired ones. The cache is updated in name order, whatever order answers came in."""
        names = sorted(set(domains))
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(domain: str) -> tuple[list[tuple[list[str], int]], str | None]:
            async with gate:
                return await self._resolve(domain)

        outcomes = await asyncio.gather(*(one(d) for d in names))
        resolved: dict[str, list[str]] = {}
        failed: dict[str, str] = {}
        dropped: dict[str, list[str]] = {}
        for domain, (answers, failure) in zip(names, outcomes, strict=True):
            if failure is not None:
                failed[domain] = failure
            found: list[str] = []
            for addresses, ttl in answers:
                expires = self.clock() + min(max(ttl, self.config.min_ttl_s), self.config.max_ttl_s)
                for address in addresses:
                    if not self.blocked(address):
                        dropped.setdefault(domain, []).append(address)
                        continue
                    entry = self.entries.setdefault(address, Entry(expires))
                    entry.expires_at = max(entry.expires_at, expires)
                    entry.domains.add(domain)
                    found.append(address)
            resolved[domain] = found
        return RefreshReport(resolved, failed, dropped, self.expire())

    def to_state(self) -> dict[str, Any]:
        """The address cache as JSON-able data, for a run that continues where this one stopped
        (once mode keeps it in its state directory between CronJob runs)."""
        return {
            address: {"expires_at": entry.expires_at, "domains": sorted(entry.domains)}
            for address, entry in sorted(self.entries.items())
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Load a saved cache (entries already expired, malformed or now never-block are skipped);
        how many addresses were kept."""
        now = self.clock()
        for address, data in state.items():
            try:
                expires_at = float(data["expires_at"])
                domains = {str(d) for d in data["domains"]}
                keep = expires_at > now and self.blocked(address)
            except (KeyError, TypeError, ValueError):
                continue
            if keep:
                self.entries[address] = Entry(expires_at, domains)
        return len(self.entries)

    def expire(self) -> int:
        """Drop addresses whose TTL ran out; how many went."""
        now = self.clock()
        gone = [address for address, entry in self.entries.items() if entry.expires_at <= now]
        for address in gone:
            del self.entries[address]
        return len(gone)

    def cidrs(self) -> list[str]:
        def key(address: str) -> tuple[int, int]:
            ip = ipaddress.ip_address(address)
            return ip.version, int(ip)

        out = []
        for address in sorted(self.entries, key=key):
            out.append(f"{address}/{32 if ipaddress.ip_address(address).version == 4 else 128}")
        return out

    # ------------------------------------------------------------------ manifests

    def _labels(self) -> dict[str, str]:
        return {**md.MANAGED_BY, md.PIPELINE_LABEL: PIPELINE}

    def _group_names(self, count: int) -> list[str]:
        return [f"{self.config.group_name}-{index:03d}" for index in range(max(count, 1))]

    def manifests(self) -> list[dict[str, Any]]:
        """The CIDR groups (always at least one, possibly empty, so the policy's references stay
        valid and an apply that empties the list really empties it), the deny policy and, when
        configured, the Tetragon policy."""
        cidrs = self.cidrs()
        shards = list(tg.chunked(cidrs, self.config.group_size)) or [[]]
        names = self._group_names(len(shards))
        domains = sorted({d for entry in self.entries.values() for d in entry.domains})
        api_version = cidr_group_api_version(self.config.cilium_version)
        docs: list[dict[str, Any]] = []
        for name, shard in zip(names, shards, strict=True):
            docs.append(
                {
                    "apiVersion": api_version,
                    "kind": "CiliumCIDRGroup",
                    "metadata": md.object_meta(
                        name, None, self._labels(), {f"{md.PREFIX}/cidr-count": str(len(shard))}
                    ),
                    "spec": {"externalCIDRs": shard},
                }
            )
        description = f"qcdr: deny egress to {len(cidrs)} addresses of {len(domains)} blocked domains"
        shown, more = md.bounded_list(domains, md.MAX_ANNOTATION_ITEMS)
        annotations = {
            f"{md.PREFIX}/description": description,
            f"{md.PREFIX}/domains": shown + (f" (+{more} more)" if more else ""),
        }
        docs.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumClusterwideNetworkPolicy",
                "metadata": md.object_meta(self.config.policy_name, None, self._labels(), annotations),
                "spec": {
                    "description": description,
                    "endpointSelector": {},
                    # deny-only: must not put every pod into egress default-deny
                    "enableDefaultDeny": {"egress": False, "ingress": False},
                    "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": name} for name in names]}],
                },
            }
        )
        if self.config.tetragon and cidrs:
            docs.append(self._tracing_policy(cidrs, annotations))
        return docs

    def _tracing_policy(self, cidrs: list[str], annotations: dict[str, str]) -> dict[str, Any]:
        # DAddr is an LPM match; the cap keeps the selector's map small (the rest are still
        # denied by Cilium, and the annotation says how many were left out)
        kept = cidrs[: self.config.tetragon_max_addresses]
        action = tg.actions(self.config.tetragon_action)
        notes = dict(annotations)
        if len(kept) < len(cidrs):
            notes[f"{md.PREFIX}/left-out"] = str(len(cidrs) - len(kept))
        return {
            "apiVersion": "cilium.io/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": md.object_meta(self.config.policy_name, None, self._labels(), notes),
            "spec": {
                "kprobes": [
                    tg.tcp_connect_hook(
                        [tg.selector(match_args=[tg.match_arg(0, "DAddr", kept)], action=action)]
                    )
                ]
            },
        }

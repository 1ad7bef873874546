"""``--dns-resolve-deny`` in once mode: the run's IOC domains and the names on the domain feeds ->
their addresses -> ``dns-resolve-deny.yaml`` (CiliumCIDRGroups behind one deny policy, optionally a
Tetragon policy).

Cilium cannot deny by name, so the domains the run's CDR findings name (the IOC domains of
``iocs.json``) and, with ``--threat-intel``, the names the domain feeds list (``domains`` and
``hosts`` formats in the ``--feeds`` file) are resolved against the cluster's DNS and their
addresses denied for their TTL (:mod:`qcdr_response.dns.resolve_deny`). The IOC domains come first:
workloads here used them. Names that cannot resolve publicly (``metadata.google.internal``,
``*.cluster.local``, a single label) are left out and reported. The address cache lives in
``<state-dir>/dns/resolve-deny.json``: an address stays blocked until its TTL ends even when a later
run cannot resolve the name, so the CronJob's schedule is the refresh interval (run it more often
than the TTL floor, 60 s by default, and addresses never lapse between runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from qcdr_common.contracts.policies.v1 import PolicyDocument, TargetVersions
from qcdr_ingest.dns.domains import build
from qcdr_ingest.intel.model import FeedSpec
from qcdr_ingest.intel.state_files import atomic_write
from qcdr_response.dns.resolve_deny import (
    PIPELINE,
    RefreshReport,
    ResolveDeny,
    ResolveDenyConfig,
    public_name,
    system_nameservers,
)

FILENAME = "dns-resolve-deny.yaml"
STATE_FILE = Path("dns") / "resolve-deny.json"


@dataclass(frozen=True)
class DnsBlockOptions:
    state_dir: Path
    nameservers: tuple[str, ...] = ()  # empty: the resolvers in /etc/resolv.conf (the pod's DNS)
    port: int = 53
    max_names: int = 5000
    min_ttl_s: int = 60
    max_ttl_s: int = 3600
    tetragon: bool = False
    never_block: tuple[str, ...] = ()
    cilium_version: str = "1.17"
    tetragon_version: str = "1.5"


@dataclass
class DnsBlockResult:
    listed: int  # names on the domain feeds
    report: RefreshReport
    left_out: int  # beyond --dns-max-names
    addresses: int
    documents: list[PolicyDocument]
    warnings: list[str] = field(default_factory=list)
    ioc_names: int = 0  # IOC domains of the run's findings resolved (before the feed names)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ioc_names": self.ioc_names,
            "listed_names": self.listed,
            "resolved_names": sum(1 for v in self.report.resolved.values() if v),
            "failed": dict(sorted(self.report.failed.items())),
            "dropped_never_block": dict(sorted(self.report.dropped.items())),
            "left_out_by_size_limit": self.left_out,
            "addresses": self.addresses,
            "expired": self.report.expired,
            "warnings": self.warnings,
        }


def _chosen(names: dict[str, int], limit: int) -> tuple[list[str], int]:
    # The names most feeds agree on first, then by name, so a size limit drops the weakest.
    ranked = sorted(names, key=lambda n: (-names[n], n))
    return ranked[:limit], max(len(ranked) - limit, 0)


async def run_resolve_deny(
    options: DnsBlockOptions,
    domain_feeds: list[tuple[FeedSpec, bytes]],
    ioc_domains: Sequence[str] = (),
) -> DnsBlockResult:
    warnings: list[str] = []
    nameservers = options.nameservers or system_nameservers()
    if not nameservers:
        raise ValueError("no DNS resolver: give --dns-resolver (the cluster DNS service address)")
    config = ResolveDenyConfig(
        nameservers=list(nameservers),
        port=options.port,
        min_ttl_s=options.min_ttl_s,
        max_ttl_s=options.max_ttl_s,
        never_block=list(options.never_block),
        cilium_version=options.cilium_version,
        tetragon=options.tetragon,
    )
    deny = ResolveDeny(config)
    state_path = options.state_dir / STATE_FILE
    if state_path.exists():
        try:
            saved = orjson.loads(state_path.read_bytes())
        except orjson.JSONDecodeError:
            saved = None
        if isinstance(saved, dict):  # valid JSON of another shape ([], 1) is as unreadable
            deny.restore(saved)
        else:
            warnings.append(f"{state_path}: unreadable, started afresh")
    indicators = build(domain_feeds)
    iocs = sorted({d.strip().rstrip(".").lower() for d in ioc_domains if d.strip()})
    local = [d for d in iocs if not public_name(d)]
    iocs = [d for d in iocs if public_name(d)]
    if local:
        warnings.append(f"IOC domains that only resolve locally, left out: {', '.join(local[:10])}")
    if not domain_feeds and not iocs:
        warnings.append("no IOC domains and no domain feeds (format domains or hosts): nothing to resolve")
    listed = {name: len(listings) for name, listings in indicators.entries.items() if name not in iocs}
    chosen, left_out = _chosen(listed, max(options.max_names - len(iocs), 0))
    names = iocs[: options.max_names] + chosen
    left_out += max(len(iocs) - options.max_names, 0)
    if left_out:
        warnings.append(
            f"size limit {options.max_names} names: {left_out} listed by the fewest feeds left out"
        )
    report = await deny.refresh(names)
    atomic_write(state_path, orjson.dumps(deny.to_state(), option=orjson.OPT_INDENT_2))
    targets = TargetVersions(tetragon=options.tetragon_version, cilium=options.cilium_version)
    documents = [
        PolicyDocument(family=PIPELINE, filename=FILENAME, body=body, finding_count=0, targets=targets)
        for body in deny.manifests()
    ]
    return DnsBlockResult(
        len(listed),
        report,
        left_out,
        len(deny.entries),
        documents,
        warnings,
        ioc_names=min(len(iocs), options.max_names),
    )

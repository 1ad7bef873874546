"""``--threat-intel`` and ``--reputation-threshold`` in once mode: feeds → indicator set →
``threat-intel-blocklist.yaml``, and AbuseIPDB reputation for the IOC IPs the main job extracted.

State lives in ``<state-dir>/intel/``: the last good copy of every feed (so a failing feed degrades
to stale, and Spamhaus is asked at most hourly across CronJob runs), the indicator set with its
provenance (so an indicator that leaves every feed expires after the TTL), and the reputation cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from qcdr_common.contracts.intel.v1 import FeedSummary
from qcdr_common.contracts.policies.v1 import PolicyDocument
from qcdr_ingest.dns.domains import DOMAIN_FORMATS
from qcdr_ingest.intel.abuseipdb import NO_KEY_MESSAGE, AbuseIPDBError, ReputationChecker, ReputationReport
from qcdr_ingest.intel.feeds import DEFAULT_FEEDS, FeedConfigError, load_feeds
from qcdr_ingest.intel.fetch import FeedFetcher, FeedResult
from qcdr_ingest.intel.indicators import BlockList, IndicatorSet
from qcdr_ingest.intel.merge import merge_round
from qcdr_ingest.intel.model import FeedSpec, FeedStatus
from qcdr_ingest.intel.netsets import NeverBlock
from qcdr_ingest.intel.parse import ParsedFeed
from qcdr_ingest.intel.state_files import FileFeedStateStore, FileReputationCache, atomic_write
from qcdr_response.policies.iocs import IocSet
from qcdr_response.policies.threat_intel import IntelFormat, IntelPolicyConfig, threat_intel_documents

INDICATORS_FILE = "indicators.json"


class IntelError(RuntimeError):
    """Threat intel or reputation could not run (bad feeds file, bad API key): one line for the user."""


def load_indicators(saved: Path, never_block: NeverBlock) -> IndicatorSet:
    """The indicator set saved in the state dir, or an empty one; a damaged file is an IntelError
    (one line, not a traceback), like a damaged watermark: its provenance is not silently dropped."""
    if not saved.exists():
        return IndicatorSet(never_block)
    try:
        return IndicatorSet.from_json(saved.read_bytes(), never_block)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntelError(f"{saved} is not a qcdr indicator set ({exc}); remove it to start over") from exc


@dataclass(frozen=True)
class IntelOptions:
    state_dir: Path
    feeds_file: Path | None = None
    feeds: tuple[FeedSpec, ...] | None = None  # given directly (the demo); beats feeds_file
    max_cidrs: int | None = None
    group_size: int = 5000
    format: IntelFormat = IntelFormat.GROUPS
    ttl: timedelta = timedelta(days=7)
    never_block: tuple[str, ...] = ()
    cilium_version: str = "1.17"
    tetragon_version: str = "1.5"


@dataclass
class FeedLine:
    """One feed's outcome for the report: status, what was loaded, what was dirty."""

    name: str
    category: str
    status: FeedStatus
    ips: int = 0
    cidrs: int = 0
    garbage: int = 0
    domains: int = 0
    age_s: float | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "status": self.status.value,
            "ips": self.ips,
            "cidrs": self.cidrs,
            "garbage": self.garbage,
            "domains": self.domains,
            "age_s": self.age_s,
            "error": self.error,
            "warnings": list(self.warnings),
        }


@dataclass
class IntelResult:
    feeds: list[FeedLine]
    blocklist: BlockList
    documents: list[PolicyDocument]
    indicators: IndicatorSet
    expired: int = 0
    groups: int = 0
    warnings: list[str] = field(default_factory=list)
    # bodies of the domain-list feeds, for --dns-resolve-deny
    domain_feeds: list[tuple[FeedSpec, bytes]] = field(default_factory=list)

    @property
    def known_bad_ips(self) -> int:
        return self.blocklist.input_ips

    @property
    def unavailable(self) -> list[str]:
        """The failed feeds' names when no feed could be read and nothing is held from earlier
        runs: an empty blocklist then means "unknown", not "nothing listed". Else empty."""
        failed = [f.name for f in self.feeds if f.status is FeedStatus.FAILED]
        usable = [f for f in self.feeds if f.status not in (FeedStatus.FAILED, FeedStatus.DISABLED)]
        if failed and not usable and self.indicators.indicator_count() == 0:
            return failed
        return []

    def as_dict(self) -> dict[str, Any]:
        bl = self.blocklist
        return {
            "feeds": [f.as_dict() for f in self.feeds],
            "known_bad_ips": self.known_bad_ips,
            "input": {"ips": bl.input_ips, "cidrs": bl.input_cidrs},
            "output": {
                "cidrs": len(bl.cidrs),
                "groups": self.groups,
                # IPv6 counts pass any JSON integer (one /64 is 2**64): orjson refused the report,
                # so they are a decimal string; IPv4 counts stay numbers
                "addresses": {"ipv4": bl.addresses - bl.ipv6_addresses, "ipv6": str(bl.ipv6_addresses)},
            },
            "excluded_never_block": bl.excluded_never_block,
            "dropped_by_size_limit": {
                "indicators": bl.dropped_indicators,
                "cidrs": bl.dropped_cidrs,
                "max_cidrs": bl.max_cidrs,
            },
            "expired": self.expired,
            "warnings": self.warnings,
        }


def feed_specs(options: IntelOptions) -> list[FeedSpec]:
    if options.feeds is not None:
        return list(options.feeds)
    if options.feeds_file is None:
        return list(DEFAULT_FEEDS)
    try:
        return load_feeds(options.feeds_file)
    except (FeedConfigError, OSError) as exc:
        raise IntelError(str(exc)) from exc


def _line(result: FeedResult, parsed: ParsedFeed | None) -> FeedLine:
    return FeedLine(
        name=result.name,
        category=result.spec.category,
        status=result.status,
        ips=parsed.ips if parsed else 0,
        cidrs=parsed.cidrs if parsed else 0,
        garbage=parsed.garbage if parsed else 0,
        domains=len(parsed.domains) if parsed else 0,
        age_s=result.age.total_seconds() if result.age is not None else None,
        error=result.error,
        warnings=result.warnings,
    )


async def run_threat_intel(options: IntelOptions, now: datetime) -> IntelResult:
    specs = feed_specs(options)
    intel_dir = options.state_dir / "intel"
    never_block = NeverBlock.build(options.never_block)
    saved = intel_dir / INDICATORS_FILE
    indicators = load_indicators(saved, never_block)
    async with FeedFetcher(FileFeedStateStore(intel_dir)) as fetcher:
        results = await fetcher.fetch_all(specs)

    parsed_feeds, expired = merge_round(
        indicators, results, configured=(s.name for s in specs), now=now, ttl=options.ttl
    )
    lines = [_line(result, parsed) for result, parsed in zip(results, parsed_feeds, strict=True)]
    warnings: list[str] = []
    for result in results:
        warnings += [f"{result.name}: {w}" for w in result.warnings]
        if result.status is FeedStatus.FAILED and result.error:
            warnings.append(f"{result.name}: failed: {result.error}")
    blocklist = indicators.blocklist(options.max_cidrs)
    summaries = [
        FeedSummary(name=ln.name, category=ln.category, status=ln.status.value, ips=ln.ips, cidrs=ln.cidrs)
        for ln in lines
    ]
    config = IntelPolicyConfig(
        format=options.format,
        group_size=options.group_size,
        cilium_version=options.cilium_version,
        tetragon_version=options.tetragon_version,
    )
    documents = threat_intel_documents(blocklist.to_contract(summaries), config)
    groups = sum(1 for d in documents if d.kind == "CiliumCIDRGroup")
    domain_feeds = [
        (r.spec, r.body) for r in results if r.body is not None and r.spec.format in DOMAIN_FORMATS
    ]
    intel = IntelResult(lines, blocklist, documents, indicators, expired, groups, warnings, domain_feeds)
    if not intel.unavailable:  # an empty set saved would later read as "nothing listed"
        atomic_write(saved, indicators.to_json())
    return intel


@dataclass
class ReputationOutcome:
    report: ReputationReport | None
    message: str | None = None
    unblocked: dict[str, str] = field(default_factory=dict)  # ip -> why it is no longer blocked

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "unblocked": self.unblocked}
        if self.report is not None:
            r = self.report
            out.update(
                {
                    "threshold": r.threshold,
                    "checked": len(r.checked),
                    "cached": len(r.cached),
                    "stale": len(r.stale),
                    "failed": len(r.failed),
                    "not_checked": len(r.not_checked),
                    "blocked": r.blocked,
                    "quota_exhausted": r.quota_exhausted,
                    "quota": r.quota.model_dump(mode="json"),
                    "summary": r.summary(),
                    "messages": r.messages,
                }
            )
        return out


async def check_reputation(
    iocs: IocSet, threshold: int, state_dir: Path, intel: IndicatorSet | None
) -> ReputationOutcome:
    """Check the IOC IPs; the ones AbuseIPDB scores below the threshold (or whitelists) are removed
    from ``iocs`` unless a threat feed lists them. IPs that could not be checked stay blocked: the
    finding itself is the evidence, and a spent quota must not unblock anything."""
    checker = ReputationChecker.from_environment(FileReputationCache(state_dir / "intel"))
    if checker is None:
        return ReputationOutcome(None, NO_KEY_MESSAGE)
    try:
        report = await checker.check_many(sorted(iocs.ips), threshold)
    except AbuseIPDBError as exc:
        raise IntelError(str(exc)) from exc
    outcome = ReputationOutcome(report, report.summary())
    blocked = set(report.blocked)
    for ip, rep in report.results.items():
        if ip in blocked or ip not in iocs.ips or (intel is not None and intel.contains(ip)):
            continue
        reason = "whitelisted" if rep.is_whitelisted else f"score {rep.score} < {threshold}"
        outcome.unblocked[ip] = reason
        del iocs.ips[ip]
        iocs.excluded["ip:reputation-below-threshold" if not rep.is_whitelisted else "ip:whitelisted"] += 1
    return outcome

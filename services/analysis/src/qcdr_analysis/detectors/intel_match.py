"""``intel_match``: an event whose destination IP is listed by threat intel, or whose reputation is
at or above the threshold, becomes one finding.

The intel tables belong to ingest; analysis reads them through ingest's read-only view
``ingest_intel_listed(cidr, feeds, confidence)`` and, when present, the reputation cache
``intel_reputation(ip, score, ...)``. One query per micro-batch looks up every distinct destination
(``JOIN ... ON l.cidr >>= ip``, served by ingest's GiST index). Which of the two relations exist is
checked at most once a minute, so a service started before ingest's migration picks them up later
without a restart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from pydantic import Field, field_validator
from qcdr_common.contracts.events.v1 import NetworkDestination, SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import ARRAY, INET
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import bindparam

from qcdr_analysis.detectors import Detector, DetectorConfig, finding_id, register
from qcdr_analysis.tetragon.view import view

NAME = "intel_match"
RELATION_CHECK_S = 60.0
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?")
IP = IPv4Address | IPv6Address

log = get_logger(__name__)


class Config(DetectorConfig):
    listed_view: str = "ingest_intel_listed"
    reputation_table: str | None = "intel_reputation"  # None: listed addresses only
    reputation_threshold: int = Field(default=50, ge=0, le=100)
    # Listing confidence counts live listings (a plain feed 1, IPsum its own list count), while
    # reputation is AbuseIPDB's 0-100 score: two scales, two thresholds.
    high_listing_confidence: int = Field(
        default=2,
        ge=1,
        description="Listings (feeds, or lists an aggregate counts) from which severity is high.",
    )
    high_reputation: int = Field(
        default=80, ge=0, le=100, description="AbuseIPDB score from which it is high."
    )
    category: str = "networking_c2_communication"
    techniques: tuple[str, ...] = ("T1071",)
    # a Tetragon process_close repeats the destination of its process_connect: one finding per
    # connection is enough
    ignore_categories: frozenset[str] = frozenset({"process_close"})

    @field_validator("listed_view", "reputation_table")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"not a plain (schema.)relation name: {value!r}")
        return value


@dataclass
class _Relations:
    """Which of the intel relations exist, re-checked every RELATION_CHECK_S."""

    listed: bool = False
    reputation: bool = False
    checked_at: float = float("-inf")


@dataclass
class State:
    config: Config
    relations: _Relations = field(default_factory=_Relations)


@dataclass(frozen=True, slots=True)
class IntelHit:
    feeds: tuple[str, ...] = ()
    confidence: int | None = None  # highest confidence of the listed CIDRs containing the address
    reputation: int | None = None  # the reputation score, when at or above the threshold

    @property
    def listed(self) -> bool:
        return bool(self.feeds) or self.confidence is not None


def setup(config: Config) -> State:
    return State(config)


def destination(event: SecurityEvent, config: Config) -> IP | None:
    """The remote address of the event: the normalized one, else what a Tetragon export names."""
    if event.category in config.ignore_categories:
        return None
    if event.network is not None and event.network.ip is not None:
        return event.network.ip
    if event.source != "tetragon":
        return None
    address = view(event).destination_ip
    try:
        return ip_address(address) if address else None
    except ValueError:
        return None


async def _refresh_relations(session: AsyncSession, state: State) -> _Relations:
    relations = state.relations
    now = time.monotonic()
    if now - relations.checked_at < RELATION_CHECK_S:
        return relations
    config = state.config
    checks = ["to_regclass(:listed) IS NOT NULL"]
    params = {"listed": config.listed_view}
    if config.reputation_table is not None:
        checks.append("to_regclass(:reputation) IS NOT NULL")
        params["reputation"] = config.reputation_table
    row = (await session.execute(text(f"SELECT {', '.join(checks)}"), params)).one()
    relations.listed = bool(row[0])
    relations.reputation = len(row) > 1 and bool(row[1])
    relations.checked_at = now
    if not relations.listed:
        log.warning("threat-intel view absent; intel_match sees reputation only", view=config.listed_view)
    return relations


def _query(config: Config, relations: _Relations) -> str:
    # relation names are interpolated, never values: Config accepts only plain identifiers
    listed = (
        "SELECT host(ips.ip) AS ip, l.feeds AS feeds, l.confidence AS confidence, NULL::int AS score"  # noqa: S608
        f" FROM ips JOIN {config.listed_view} l ON l.cidr >>= ips.ip"
    )
    reputation = (
        "SELECT host(ips.ip), NULL::text[], NULL::int, r.score::int"  # noqa: S608
        f" FROM ips JOIN {config.reputation_table} r ON r.ip = ips.ip WHERE r.score >= :threshold"
    )
    parts = ([listed] if relations.listed else []) + ([reputation] if relations.reputation else [])
    return "WITH ips AS (SELECT DISTINCT unnest(:ips) AS ip) " + " UNION ALL ".join(parts)


async def lookup(session: AsyncSession, events: Sequence[SecurityEvent], state: State) -> dict[IP, IntelHit]:
    """Every destination of the batch that is listed or has a bad reputation, in one query."""
    ips = sorted({ip for event in events if (ip := destination(event, state.config)) is not None}, key=str)
    if not ips:
        return {}
    relations = await _refresh_relations(session, state)
    if not (relations.listed or relations.reputation):
        return {}
    statement = text(_query(state.config, relations)).bindparams(bindparam("ips", type_=ARRAY(INET)))
    params: dict[str, Any] = {"ips": [str(ip) for ip in ips]}
    if relations.reputation:
        params["threshold"] = state.config.reputation_threshold
    feeds: dict[IP, set[str]] = {}
    confidence: dict[IP, int] = {}
    reputation: dict[IP, int] = {}
    for row in await session.execute(statement, params):
        ip = ip_address(row.ip)
        if row.score is not None:
            reputation[ip] = max(reputation.get(ip, 0), int(row.score))
            continue
        feeds.setdefault(ip, set()).update(row.feeds or ())
        if row.confidence is not None:
            confidence[ip] = max(confidence.get(ip, 0), int(row.confidence))
    return {
        ip: IntelHit(tuple(sorted(feeds.get(ip, ()))), confidence.get(ip), reputation.get(ip))
        for ip in sorted(set(feeds) | set(confidence) | set(reputation), key=str)
    }


def _reasons(hit: IntelHit) -> str:
    reasons = []
    if hit.listed:
        reasons.append(f"listed by {', '.join(hit.feeds) or 'threat intel'}")
    if hit.reputation is not None:
        reasons.append(f"reputation {hit.reputation}")
    return "; ".join(reasons)


def detect(
    events: Sequence[SecurityEvent], state: State, hits: dict[IP, IntelHit] | None = None
) -> list[Finding]:
    if not hits:
        return []
    config = state.config
    findings = []
    for event in events:
        ip = destination(event, config)
        hit = hits.get(ip) if ip is not None else None
        if ip is None or hit is None:
            continue
        high = (hit.confidence or 0) >= config.high_listing_confidence or (
            hit.reputation or 0
        ) >= config.high_reputation
        network = event.network or NetworkDestination(ip=ip)
        reasons = _reasons(hit)
        port = f":{network.port}" if network.port is not None else ""
        findings.append(
            Finding(
                id=finding_id(NAME, (event,)),
                kind=FindingKind.INTEL_MATCH,
                detector=NAME,
                category=config.category,
                severity=Severity.HIGH if high else Severity.MEDIUM,
                techniques=tuple(sorted(set(config.techniques) | set(event.techniques))),
                title=f"Connection to {ip} ({reasons})",
                explanation=f"{event.source} {event.category}: destination {ip}{port} is {reasons}",
                event_time=event.event_time,
                evidence_event_ids=(event.id,),
                workload=event.workload,
                process=event.process,
                network=network,
                source=event.source,
                attributes={
                    "ip": str(ip),
                    "feeds": list(hit.feeds),
                    "confidence": hit.confidence,
                    "reputation": hit.reputation,
                },
            )
        )
    return findings


DETECTOR = register(
    Detector(
        name=NAME, kind=FindingKind.INTEL_MATCH, config=Config, setup=setup, detect=detect, lookup=lookup
    )
)

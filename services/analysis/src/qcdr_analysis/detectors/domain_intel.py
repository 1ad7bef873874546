"""``domain_intel``: a DNS query (or any event naming a destination domain) for a name that a
threat-intel domain feed lists, itself or through a listed parent, becomes one finding.

The listed domains belong to ingest (``domains`` and ``hosts`` feeds); analysis reads them through
ingest's read-only view ``ingest_intel_domains(domain, feeds, categories)``: one query per
micro-batch for every distinct name and its parents down to the registered domain, the most
specific listing wins. Whether the view exists is checked at most once a minute, so a service
started before ingest's migration picks it up later without a restart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import field_validator
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import bindparam
from sqlalchemy.types import Text

from qcdr_analysis.detectors import Detector, DetectorConfig, finding_id, register
from qcdr_analysis.dns.domains import normalise, split

NAME = "domain_intel"
RELATION_CHECK_S = 60.0
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?")
MAX_NAMES = 5000

log = get_logger(__name__)


class Config(DetectorConfig):
    listed_view: str = "ingest_intel_domains"
    category: str = "dns.malicious_domain"
    techniques: tuple[str, ...] = ("T1071.004",)  # application layer protocol: DNS (C2 lookups)
    # several feeds agreeing, or a feed category naming C2 or malware, make it high
    high_feeds: int = 2
    high_categories: frozenset[str] = frozenset({"c2", "malware", "botnet", "ransomware", "phishing"})

    @field_validator("listed_view")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"not a plain (schema.)relation name: {value!r}")
        return value


@dataclass
class State:
    config: Config
    view_exists: bool = False
    checked_at: float = float("-inf")


@dataclass(frozen=True, slots=True)
class Listed:
    domain: str
    feeds: tuple[str, ...]
    categories: tuple[str, ...]


def setup(config: Config) -> State:
    return State(config)


def candidates(domain: str) -> list[str]:
    """``domain`` and its parents down to its registered domain (most specific first)."""
    name = normalise(domain)
    registered = split(name).registered
    labels = name.split(".")
    out = []
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        out.append(candidate)
        if candidate == registered:
            break
    return out


def _domain(event: SecurityEvent) -> str | None:
    network = event.network
    return network.domain if network is not None and network.domain else None


async def lookup(session: AsyncSession, events: Sequence[SecurityEvent], state: State) -> dict[str, Listed]:
    names = sorted({c for e in events if (d := _domain(e)) for c in candidates(d)})[:MAX_NAMES]
    if not names:
        return {}
    now = time.monotonic()
    if now - state.checked_at >= RELATION_CHECK_S:
        found = (
            await session.execute(text("SELECT to_regclass(:v) IS NOT NULL"), {"v": state.config.listed_view})
        ).scalar()
        state.view_exists, state.checked_at = bool(found), now
    if not state.view_exists:
        return {}
    statement = text(
        f"SELECT domain, feeds, categories FROM {state.config.listed_view} WHERE domain = ANY(:names)"  # noqa: S608
    ).bindparams(bindparam("names", type_=ARRAY(Text)))
    rows = await session.execute(statement, {"names": names})
    return {r.domain: Listed(r.domain, tuple(r.feeds), tuple(r.categories)) for r in rows}


def detect(
    events: Sequence[SecurityEvent], state: State, listed: dict[str, Listed] | None = None
) -> list[Finding]:
    if not listed:
        return []
    config = state.config
    findings = []
    for event in events:
        domain = _domain(event)
        if domain is None:
            continue
        hit = next((listed[c] for c in candidates(domain) if c in listed), None)
        if hit is None:
            continue
        high = len(hit.feeds) >= config.high_feeds or bool(set(hit.categories) & config.high_categories)
        how = "listed" if hit.domain == normalise(domain) else f"under listed {hit.domain}"
        reasons = f"{how} by {', '.join(hit.feeds)}"
        findings.append(
            Finding(
                id=finding_id(NAME, (event,)),
                kind=FindingKind.INTEL_MATCH,
                detector=NAME,
                category=config.category,
                severity=Severity.HIGH if high else Severity.MEDIUM,
                techniques=tuple(sorted(set(config.techniques) | set(event.techniques))),
                title=f"Lookup of {domain} ({reasons})",
                explanation=f"{event.source} {event.category}: {domain} is {reasons}"
                + (f" ({', '.join(hit.categories)})" if hit.categories else ""),
                event_time=event.event_time,
                evidence_event_ids=(event.id,),
                workload=event.workload,
                process=event.process,
                network=event.network,
                source=event.source,
                attributes={
                    "domain": domain,
                    "listed": hit.domain,
                    "feeds": list(hit.feeds),
                    "categories": list(hit.categories),
                },
            )
        )
    return findings


DETECTOR = register(
    Detector(
        name=NAME, kind=FindingKind.INTEL_MATCH, config=Config, setup=setup, detect=detect, lookup=lookup
    )
)

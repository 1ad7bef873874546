"""Shapes shared by the intel modules: feed specs, fetch outcomes, stored state, reputation.

Stores are protocols so that once mode keeps state in files (``--state-dir``) and the services keep
it in PostgreSQL, with the same fetcher and reputation client on top.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class FeedFormat(StrEnum):
    AUTO = "auto"  # detect per line: IP, CIDR, "IP<TAB>count", "CIDR ; SBL..."
    IP = "ip"  # one address per line
    CIDR = "cidr"  # one network per line
    FIRST_COLUMN = "first-column"  # first whitespace/tab/; separated token (IPsum, DShield-like)
    SPAMHAUS = "spamhaus"  # "CIDR ; SBLnnnn", or the drop_v4/v6.json lines {"cidr": ...}
    DSHIELD = "dshield"  # block.txt: "start<TAB>end<TAB>prefixlen<TAB>attacks..."
    DATAPLANE = "dataplane"  # "ASN | ASname | ipaddr | utc | category"
    DOMAINS = "domains"  # one domain per line (Maltrail trails); stray IP[:port] lines are IPs
    HOSTS = "hosts"  # hosts file: "0.0.0.0 name [name ...]"; the names are the indicators


class FeedSpec(BaseModel):
    """One feed from ``--feeds FILE`` (a YAML list of these). Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    url: str = Field(description="http(s):// or file:// URL")
    category: str = Field(min_length=1, max_length=63)
    format: FeedFormat = FeedFormat.AUTO
    min_interval: timedelta = Field(default=timedelta(minutes=15), description="Never fetched more often.")
    enabled: bool = True
    may_be_empty: bool = Field(
        default=False, description="An empty list is normal (e.g. Feodo after takedowns)."
    )


class FeedStatus(StrEnum):
    FRESH = "fresh"  # downloaded now (200)
    NOT_MODIFIED = "not-modified"  # 304: the stored copy is current
    SKIPPED = "skipped"  # fetched less than min_interval ago: the stored copy is used
    STALE = "stale"  # the fetch failed: the last good copy is used, with a warning
    EMPTY = "empty"  # fetched fine and legitimately empty
    FAILED = "failed"  # fetch failed and there is no earlier copy
    DISABLED = "disabled"


class StoredFeed(BaseModel):
    """The last good copy of a feed and what is needed for a conditional GET."""

    model_config = ConfigDict(extra="forbid")

    name: str
    url: str
    body: bytes
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: AwareDatetime  # when the body was last downloaded or confirmed (304)
    attempted_at: AwareDatetime  # last attempt, successful or not (for min_interval)
    last_error: str | None = None


class FeedAttempt(BaseModel):
    """The last attempt at a feed, whether or not there is a good copy (see ``last_attempt``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str
    attempted_at: AwareDatetime
    error: str | None = None


class FeedStateStore(Protocol):
    async def load(self, name: str) -> StoredFeed | None:
        """The last good copy, or None when the feed never succeeded."""

    async def last_attempt(self, name: str) -> FeedAttempt | None:
        """The last attempt, also for a feed that never succeeded (``min_interval`` holds for failing
        feeds too: Spamhaus firewalls clients that retry too often)."""

    async def save(self, feed: StoredFeed) -> None: ...

    async def record_failure(self, name: str, url: str, at: datetime, error: str) -> None:
        """Remember a failed attempt without touching the last good body."""


class Reputation(BaseModel):
    """One AbuseIPDB ``check`` answer, as cached."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ip: str
    score: int = Field(ge=0, le=100)
    total_reports: int = 0
    usage_type: str | None = None
    country_code: str | None = None
    is_whitelisted: bool | None = None
    is_tor: bool | None = None
    last_reported_at: AwareDatetime | None = None
    checked_at: AwareDatetime


class ReputationCache(Protocol):
    async def get_many(self, ips: list[str]) -> dict[str, Reputation]:
        """Cached answers for these IPs, whatever their age (the caller applies the TTL)."""

    async def put_many(self, items: list[Reputation]) -> None: ...

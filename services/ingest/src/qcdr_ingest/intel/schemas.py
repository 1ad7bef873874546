"""API and stream shapes of threat intel (``GET /v1/intel/...``, ``ingest.intel_changed``)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field


class FeedStatusRead(BaseModel):
    """One feed at the last refresh."""

    name: str
    category: str
    url: str = Field(description="Credentials and query string redacted.")
    status: str = Field(description="fresh, not-modified, skipped, stale, empty, failed or disabled.")
    fetched_at: AwareDatetime | None = Field(default=None, description="When the copy in use was fetched.")
    checked_at: AwareDatetime
    age_s: float | None = Field(default=None, description="Age of the copy in use, at the time of asking.")
    ips: int = 0
    cidrs: int = 0
    garbage: int = Field(default=0, description="Lines that were not understood.")
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)


class IntelFeeds(BaseModel):
    refreshed_at: AwareDatetime | None = Field(description="Last refresh; null before the first.")
    changed_at: AwareDatetime | None = Field(description="Last time the listed set changed.")
    content_hash: str | None = None
    cidrs: int = Field(description="Rows of the listed set (view ingest_intel_listed).")
    feeds: list[FeedStatusRead]


class IntelChanged(BaseModel):
    """Payload of ``ingest.intel_changed`` on ``ingest:intel``: the set itself is in the view
    ``ingest_intel_listed(cidr, feeds, confidence)``, committed before this is published."""

    content_hash: str
    previous_hash: str | None
    cidrs: int
    added: int
    removed: int
    changed_at: AwareDatetime
    feeds: list[FeedStatusRead]


class ListedCidr(BaseModel):
    cidr: str
    feeds: list[str]
    confidence: int


class ReputationRead(BaseModel):
    score: int
    total_reports: int
    is_whitelisted: bool | None = None
    is_tor: bool | None = None
    checked_at: AwareDatetime


class IntelLookup(BaseModel):
    ip: str = Field(description="The address, canonical (IPv4-mapped IPv6 as IPv4).")
    listed: bool
    matches: list[ListedCidr] = Field(description="Listed CIDRs containing the address, most specific first.")
    reputation: ReputationRead | None = Field(
        default=None, description="The cached AbuseIPDB answer, if one was ever fetched."
    )

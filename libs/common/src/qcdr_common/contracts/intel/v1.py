"""``IntelBlocklist`` v1: the aggregated threat-intel block set, as the response side consumes it.

Produced by ingest (feeds → indicator set → minimal CIDRs minus never-block), consumed by the
blocklist generator. CIDRs are canonical (no host bits), v4 before v6, sorted.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

VERSION = 1


class BlockedCidr(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cidr: str
    feeds: tuple[str, ...] = Field(description="Feeds that list an address in this CIDR.")
    confidence: int = Field(ge=0, description="Highest confidence of its indicators (feeds listing it, ...).")


class FeedSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    category: str
    status: str
    ips: int = 0
    cidrs: int = 0


class IntelBlocklist(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cidrs: list[BlockedCidr]
    feeds: list[FeedSummary] = Field(default_factory=list)
    input_ips: int = 0
    input_cidrs: int = 0
    excluded_never_block: int = Field(default=0, description="Indicators fully inside never-block ranges.")
    dropped_indicators: int = Field(default=0, description="Left out because the size limit bit.")
    dropped_cidrs: int = 0
    max_cidrs: int | None = None

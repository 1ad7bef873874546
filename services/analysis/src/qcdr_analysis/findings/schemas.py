"""API shapes of the findings routes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field
from qcdr_common.api.pagination import Page
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding


class FindingRead(Finding):
    """A finding as published on ``analysis:findings``, plus when analysis stored it."""

    created_at: datetime = Field(description="When analysis recorded the finding.")


FindingList = Page[FindingRead]


class StatsBucket(StrEnum):
    HOUR = "hour"
    DAY = "day"


class CategoryCount(BaseModel):
    category: str
    count: int


class NamespaceCount(BaseModel):
    namespace: str
    count: int


class ImageCount(BaseModel):
    image: str
    count: int


class SeriesBucket(BaseModel):
    start: datetime = Field(description="The bucket's start (UTC); it covers one hour or one day.")
    counts: dict[Severity, int] = Field(description="Findings per severity (every severity, zeros too).")
    categories: dict[str, int] = Field(
        default_factory=dict,
        description="Findings per category for the largest categories of the range, the rest as "
        "'other' (categories without findings in the bucket are left out).",
    )


class FindingStats(BaseModel):
    """Aggregates over the findings whose event time is in ``[since, until)``."""

    since: datetime
    until: datetime
    bucket: StatsBucket
    total: int
    by_severity: dict[Severity, int] = Field(description="Every severity, zeros too.")
    by_category: list[CategoryCount] = Field(description="The 20 largest categories.")
    series: list[SeriesBucket] = Field(description="One entry per bucket, empty ones included, oldest first.")
    top_namespaces: list[NamespaceCount] = Field(description="The 10 namespaces with most findings.")
    top_images: list[ImageCount] = Field(description="The 10 container images with most findings.")

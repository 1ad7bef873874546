"""API shapes of the events routes."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from qcdr_common.contracts.events.v1 import SecurityEvent


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Position of the item in the batch, from 0 (NDJSON: non-blank lines).")
    line: int | None = Field(default=None, description="NDJSON only: the line number, from 1.")
    reason: str


class IngestResult(BaseModel):
    """What happened to a batch. Valid items are kept even when others are rejected."""

    source: str
    received: int = Field(description="Items in the batch.")
    accepted: int = Field(description="Valid items (stored now, or already stored before).")
    stored: int = Field(description="Events stored and published by this request.")
    duplicates: int = Field(description="Valid items whose event id was already stored or repeated.")
    rejected: int = Field(description="Items that could not become events.")
    ignored: int = Field(
        default=0,
        description="Valid items that are not events for this source (a Hubble flow in the middle "
        "of a connection): neither stored nor rejected.",
    )
    rejections: list[Rejection] = Field(
        description="Why items were rejected, by index (the first few when there are many)."
    )


class SourceInfo(BaseModel):
    name: str
    summary: str


class EventRead(SecurityEvent):
    """A stored event: the SecurityEvent as published, and when ingest received it."""

    received_at: AwareDatetime

"""API shapes of the profiles routes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from qcdr_common.api.pagination import Page


class ProfileState(StrEnum):
    LEARNING = "learning"
    READY = "ready"


class ProfileCounts(BaseModel):
    events: int = 0
    processes: int = 0
    destinations: int = 0
    ports: int = 0
    files: int = 0
    workloads: int = Field(default=0, description="Workload keys the profile recorded (capped).")
    novel: int = Field(default=0, description="Behaviours seen after learning (and drift) recorded.")
    overflow: int = Field(default=0, description="Behaviours not recorded because a cap was reached.")


class ProfileSummary(BaseModel):
    key: str = Field(description="The profile key: sha256:<image digest>, image:<ref> or workload:<key>.")
    state: ProfileState
    generation: int = Field(description="Goes up on every write; a reset bumps it so workers reload.")
    first_seen: datetime | None = Field(description="Event time learning started (null after a reset).")
    ready_at: datetime | None = Field(description="Event time learning ends.")
    last_seen: datetime | None = Field(description="Event time of the newest event profiled.")
    learning_progress: float = Field(
        ge=0, le=1, description="Share of the learning period seen (event time)."
    )
    counts: ProfileCounts
    created_at: datetime
    updated_at: datetime
    reset_at: datetime | None = None
    shared_from: str | None = Field(
        default=None,
        description="The cluster whose shared baseline this profile was taken from (federation); "
        "null for a profile learned here.",
    )
    inherited_from: str | None = Field(
        default=None,
        description="The profile of the image this one replaced in a rollout, whose baseline it "
        "started from (it then learned rollout_learning_period); null for a profile that learned alone.",
    )


class Behaviour(BaseModel):
    value: str = Field(description="Executable path, destination (ip:port, domain:port), port or file path.")
    count: int
    first_seen: datetime
    last_seen: datetime
    parents: dict[str, int] | None = Field(default=None, description="Processes: parents and how often.")
    hashes: dict[str, int] | None = Field(default=None, description="Processes: hashes seen and how often.")
    written: bool | None = Field(default=None, description="Files: whether it was ever written.")


class TopBehaviours(BaseModel):
    processes: list[Behaviour]
    destinations: list[Behaviour]
    ports: list[Behaviour]
    files: list[Behaviour]


class SeenAfterLearning(BaseModel):
    category: str = Field(description="anomaly.* or drift.*")
    value: str
    count: int
    first_seen: datetime
    last_seen: datetime
    last_alerted: datetime | None = Field(description="When it last raised a finding (event time).")


class WorkloadRead(BaseModel):
    workload_key: str
    cluster: str | None
    namespace: str | None
    owner_kind: str | None
    owner_name: str | None
    image: str | None
    first_seen: datetime
    last_seen: datetime


class SharedFrom(BaseModel):
    """Where a shared baseline came from (federation: another cluster learned it)."""

    cluster: str
    generation: int = Field(description="The profile's generation in the source cluster.")
    ready_at: datetime | None = Field(description="When it became ready there (event time).")
    imported_at: datetime = Field(description="When this analysis took it.")


class ProfileRead(ProfileSummary):
    """One profile: its state, who uses it, what it learned, what it saw since."""

    shared: SharedFrom | None = Field(default=None, description="Set for a shared baseline.")

    workloads: list[WorkloadRead] = Field(description="Workloads using this profile, most recent first.")
    workload_count: int
    overflow: dict[str, int] = Field(description="Per cap, behaviours that did not fit.")
    top: TopBehaviours
    after_learning: list[SeenAfterLearning] = Field(
        description="Anomalous behaviour seen after learning (not in the baseline), newest first."
    )
    drift: list[SeenAfterLearning] = Field(description="Drift seen, newest first.")
    # Extension point: per-feature baselines of the workload anomaly engine (filled in by it).
    features: list[dict[str, Any]] | None = None


ProfileList = Page[ProfileSummary]

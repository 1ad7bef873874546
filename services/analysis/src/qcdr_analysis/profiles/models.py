"""The profile tables: one row per image profile, one per workload using a profile.

``analysis_profiles.data`` is the profile's JSON (:meth:`Profile.to_json`); ``generation`` goes
up by one on every write, which is what optimistic concurrency compares (a worker writes only
over the generation it loaded, an API reset bumps it so workers reload). ``summary`` holds the
counts a list shows, so a list never reads whole profiles. ``ready_generation`` is the
generation at which the current learning window ended (null while learning): once ready, a
baseline no longer changes (only its counts do), so this is what tells a new baseline from a
count flush (the shared-baseline view publishes it as the generation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_analysis.db.base import AnalysisBase


class ProfileRow(AnalysisBase):
    __tablename__ = "analysis_profiles"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(BigInteger)
    ready_generation: Mapped[int | None] = mapped_column(BigInteger)
    # event times; null after a reset, until the next event starts learning again
    first_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    reset_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('learning', 'ready')", name="state_known"),
        CheckConstraint("generation > 0", name="generation_positive"),
        # the API's order (newest profile first, key as tie-breaker)
        Index("ix_analysis_profiles_created_at_key", "created_at", "key"),
        Index("ix_analysis_profiles_state", "state"),
    )


class ProfileWorkloadRow(AnalysisBase):
    """A workload (``cluster/namespace/Kind/name``) and the image profile it uses now."""

    __tablename__ = "analysis_profile_workloads"

    workload_key: Mapped[str] = mapped_column(Text, primary_key=True)
    profile_key: Mapped[str] = mapped_column(Text)
    cluster: Mapped[str | None] = mapped_column(Text)
    namespace: Mapped[str | None] = mapped_column(Text)
    owner_kind: Mapped[str | None] = mapped_column(Text)
    owner_name: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # event time
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_analysis_profile_workloads_profile_key", "profile_key"),
        Index("ix_analysis_profile_workloads_namespace_profile_key", "namespace", "profile_key"),
    )

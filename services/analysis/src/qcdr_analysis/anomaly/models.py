"""Tables of the workload anomaly engine: per-workload baselines and the population models
(how far each input has got is in :mod:`qcdr_analysis.input_clocks`).

``state`` is the engine's JSON for one workload (orjson bytes, not JSONB: it is written on every
checkpoint and only ever read whole, so Postgres has no reason to parse it). ``generation``
guards concurrent writers: a write expects the generation it loaded, so two workers (or a reset
through the API) never silently overwrite each other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, LargeBinary, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_analysis.db.base import AnalysisBase


class BaselineRow(AnalysisBase):
    __tablename__ = "analysis_baselines"

    key: Mapped[str] = mapped_column(Text, primary_key=True)  # workload key @ image
    workload_key: Mapped[str] = mapped_column(Text, index=True)
    profile_key: Mapped[str] = mapped_column(Text, index=True)
    namespace: Mapped[str | None] = mapped_column(Text)
    ready: Mapped[bool] = mapped_column()
    generation: Mapped[int] = mapped_column(Integer)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ModelRow(AnalysisBase):
    __tablename__ = "analysis_models"

    name: Mapped[str] = mapped_column(Text, primary_key=True)  # "population"
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB)
    forest: Mapped[bytes] = mapped_column(LargeBinary)
    centroids: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

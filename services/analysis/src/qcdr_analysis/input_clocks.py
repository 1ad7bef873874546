"""How far in event time each input of a stateful detector has got, kept across restarts.

A detector that judges lateness (the workload anomaly engine closes windows at its slowest
input; behaviour profiles tell a backfill from live events) needs to know, after a restart or a
lease hand-over, how far its inputs had got: the first batch of a new process may be a slow
input's delivery or a backfill, and without the stored marks it would be taken for the present.

An input is ``(kind, source, cluster)``: ``("events", "qualys", "prod-eu")``, ``("samples",
"json", "")``. Marks are stored per detector as one JSON row (a few inputs, written at checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Text, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_analysis.db.base import AnalysisBase

InputKey = tuple[str, str, str]


class InputClockRow(AnalysisBase):
    """``marks``: ``[[kind, source, cluster, ISO time], …]`` of detector ``name``."""

    __tablename__ = "analysis_input_clocks"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    marks: Mapped[list[Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


async def save_marks(session: AsyncSession, name: str, marks: Mapping[InputKey, datetime]) -> None:
    """Store how far each input of detector ``name`` has got (replacing what was stored)."""
    rows = [[*key, when.isoformat()] for key, when in sorted(marks.items())]
    statement = insert(InputClockRow).values(name=name, marks=rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[InputClockRow.name],
            set_={"marks": statement.excluded.marks, "updated_at": func.now()},
        )
    )


async def load_marks(session: AsyncSession, name: str) -> dict[InputKey, datetime]:
    row = await session.scalar(select(InputClockRow.marks).where(InputClockRow.name == name))
    return {(str(k), str(s), str(c)): datetime.fromisoformat(t) for k, s, c, t in row or ()}

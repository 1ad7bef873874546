"""The resolve-and-deny loop's one row (owner: the response service): the address cache, so an
address lives out its TTL across restarts, and the last refresh's report, which the API shows
whichever process ran the loop."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, SmallInteger, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_response.db.base import ResponseBase

SINGLETON = 1


class ResolveDenyRow(ResponseBase):
    __tablename__ = "response_dns_resolve_deny"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    refreshed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

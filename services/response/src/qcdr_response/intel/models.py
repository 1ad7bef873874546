"""What the threat-intel blocklist last wrote (owner: the response service), shared by replicas.

The refresh skips writing and applying when the documents are those written last. Kept in memory,
"last" was this process's last: a replica that wrote set X, then saw another write Y, skipped X
when the feeds went back to it, and the cluster kept Y until the other replica's next round.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Text
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_response.db.base import ResponseBase


class WrittenRow(ResponseBase):
    __tablename__ = "response_pipeline_written"

    pipeline: Mapped[str] = mapped_column(Text, primary_key=True)
    digest: Mapped[str] = mapped_column(Text, nullable=False, comment="SHA-256 of the documents' hashes")
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

"""Removals of federated policies this spoke did not hold when they came (``federation/service.py``).

A placement and the removal that follows it can be handled in the other order: the consumer
group spreads ``federation:policies`` over the replicas, and an entry a dead replica had read
comes back only after the claim idle time. The removal is kept here with the spoke's sequence
number, so that the late placement is known to be stale instead of applying a policy the hub
removed. Rows older than a day are purged when a new one is written (a redelivery comes within
minutes).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_response.db.base import ResponseBase


class FederatedRemovalRow(ResponseBase):
    __tablename__ = "response_federated_removals"

    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    namespace: Mapped[str] = mapped_column(Text, primary_key=True)  # the identity's namespace key
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    policy_id: Mapped[str] = mapped_column(Text, primary_key=True)  # the hub's federated policy
    sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    removed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

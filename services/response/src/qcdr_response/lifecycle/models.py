"""The tables of the policy lifecycle (owner: the response service)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_response.db.base import ResponseBase

# The family of policies placed by a federation hub (``qcdr_response.federation``): no generator
# makes them, and the generators never write over them.
FEDERATED_FAMILY = "federated"


class PolicyStatus(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    APPLIED = "applied"
    REVOKED = "revoked"


class LinkOutcome(StrEnum):
    LINKED = "linked"  # covered by a policy version
    UNMAPPED = "unmapped"  # no generator answers the finding's category or techniques
    DROPPED = "dropped"  # its scope's document failed validation (a generator bug, reported)


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class ReceivedRow(ResponseBase):
    """Envelope ids already handled: a redelivered message is skipped (at-least-once streams)."""

    __tablename__ = "response_received"

    envelope_id: Mapped[str] = mapped_column(Text, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    # retention deletes the oldest (QCDR_RECEIVED_RETENTION_S)
    __table_args__ = (Index("ix_response_received_received_at", "received_at"),)


class FindingRow(ResponseBase):
    """A finding as received; ``family``/``namespace`` is the scope whose policy covers it."""

    __tablename__ = "response_findings"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    category: Mapped[str] = mapped_column(Text, nullable=False)
    severity: Mapped[str] = mapped_column(Text, nullable=False)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # NULL: no generator answers it (it is linked as "unmapped")
    family: Mapped[str | None] = mapped_column(Text, nullable=True)
    # '' for findings without a namespace: their policy is clusterwide (NULL would break equality)
    namespace: Mapped[str] = mapped_column(Text, nullable=False)
    envelope_id: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # closed through the API (outputs resolve the finding's incident, e.g. in PagerDuty)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    # a verdict naming a destination address or port: an input of the CDR IOC blocklist
    ioc: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    __table_args__ = (
        Index("ix_response_findings_scope", "family", "namespace"),
        Index("ix_response_findings_ioc", "id", postgresql_where=text("ioc")),
    )


class PolicyRow(ResponseBase):
    """A policy's identity (one Kubernetes object) and where it is in its lifecycle."""

    __tablename__ = "response_policies"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    api_version: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    # '' for cluster-scoped kinds, so that the identity is one plain unique constraint
    namespace: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    family: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    current_version: Mapped[int] = mapped_column(Integer, nullable=False)
    # the version in the cluster (it stays there when a newer one is only proposed)
    applied_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # where a federated policy came from (hub policy id, generation, content hash, enforce, ...);
    # NULL for the policies this service generates. Events carry it so the federation spoke can
    # map a status to the placement it reports on.
    federation: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        UniqueConstraint("kind", "namespace", "name", name="uq_response_policies_identity"),
        CheckConstraint(f"status IN ({_in(PolicyStatus)})", name="status"),
        Index("ix_response_policies_status", "status"),
        Index("ix_response_policies_family", "family", "namespace"),
    )


class PolicyVersionRow(ResponseBase):
    """One content of a policy; a new row only when the content hash changes."""

    __tablename__ = "response_policy_versions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("response_policies.id", ondelete="CASCADE"), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    yaml: Mapped[str] = mapped_column(Text, nullable=False)
    filename: Mapped[str] = mapped_column(Text, nullable=False)
    finding_count: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (UniqueConstraint("policy_id", "version", name="uq_response_policy_versions_version"),)


class FindingPolicyRow(ResponseBase):
    """Each finding's one link: the policy version that covers it (or why none does)."""

    __tablename__ = "response_finding_policy"

    finding_id: Mapped[str] = mapped_column(
        Text, ForeignKey("response_findings.id", ondelete="CASCADE"), primary_key=True
    )
    policy_version_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("response_policy_versions.id", ondelete="CASCADE"), nullable=True
    )
    outcome: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    linked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        CheckConstraint(f"outcome IN ({_in(LinkOutcome)})", name="outcome"),
        CheckConstraint("(outcome = 'linked') = (policy_version_id IS NOT NULL)", name="linked_has_version"),
        Index("ix_response_finding_policy_policy_version_id", "policy_version_id"),
    )

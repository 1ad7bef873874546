"""The hub's tables of spoke clusters (owner: the federation service, hub role).

A cluster row exists from the moment it is *declared* (API or a ``FederatedCluster`` object) or a
bootstrap token is made for it; it is *registered* once a spoke exchanged a bootstrap token for a
credential. Credentials and bootstrap tokens are stored as SHA-256 digests only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_federation.db.base import FederationBase


class ClusterRow(FederationBase):
    __tablename__ = "federation_clusters"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False, default=dict)
    # the labels the spoke itself reported at registration: shown, never used for placement
    reported_labels: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, default=dict, server_default=text("'{}'::jsonb")
    )
    # who made the row: "api" (declared or a bootstrap token made), "crd" (FederatedCluster), "cli"
    source: Mapped[str] = mapped_column(Text, nullable=False, comment="api, crd or cli")
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the last heartbeat as received, without its per-policy list (stored per policy elsewhere)
    heartbeat: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    version: Mapped[str | None] = mapped_column(Text, nullable=True)
    kubernetes_version: Mapped[str | None] = mapped_column(Text, nullable=True)
    node_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pod_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # the last health the sweep derived (ClusterHealth), so transitions are seen once
    health: Mapped[str] = mapped_column(Text, nullable=False, default="pending")
    health_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # an operator asked for a new credential: the next heartbeat ack says rotate_credential, and
    # the spoke's rotation clears it
    rotate_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # a removed cluster keeps its row (history, audit) but its credentials stop working
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class CredentialRow(FederationBase):
    """A spoke's credential: ``<id>.<secret>`` on the wire, SHA-256 of the whole string here."""

    __tablename__ = "federation_credentials"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    cluster_id: Mapped[str] = mapped_column(
        Text, ForeignKey("federation_clusters.id", ondelete="CASCADE"), nullable=False
    )
    sha256: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # rotation: the old credential keeps working until this time (overlap), then fails
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_federation_credentials_cluster_id", "cluster_id"),)


class BootstrapTokenRow(FederationBase):
    """A one-time token a spoke exchanges for a credential (``<id>.<secret>``, stored hashed)."""

    __tablename__ = "federation_bootstrap_tokens"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    cluster_name: Mapped[str] = mapped_column(Text, nullable=False)
    sha256: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, unique=True)
    # "api" or "crd" (the Secret a FederatedCluster names)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)

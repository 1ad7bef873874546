"""Federated policies, their history and their per-cluster apply status (hub role).

A policy is soft-deleted (``deleted_at``): its history and the statuses spokes reported stay for
audit, and its name is free again (the unique index covers live policies only), so a policy that
was deleted and declared again (a CRD recreated) starts a new id at generation 1.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_federation.db.base import FederationBase


class FederatedPolicyRow(FederationBase):
    __tablename__ = "federation_policies"

    # "fp-<uuid7>"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # the template's apiVersion and kind, copied out for listing and filtering
    api_version: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    # the FederatedPolicySpec as JSON (template, placement, overrides, enforce, description)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # +1 only when content_hash changes
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    # sha256 of the spec's canonical JSON
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    # "api" or "crd"
    source: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # suspended: every cluster keeps what it was released, nothing is added, updated or taken
    # away (not part of the spec: suspending is an operation, not a new generation)
    suspended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    suspended_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the generation whose progressive rollout failed and was rolled back (on_failure: rollback):
    # it is released to nobody more until a resume; a new generation rolls out again
    rolled_back_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index(
            "ix_federation_policies_name_live",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )


class FederatedPolicyVersionRow(FederationBase):
    """One row per generation: what the spec was, who made it and when."""

    __tablename__ = "federation_policy_versions"

    policy_id: Mapped[str] = mapped_column(
        Text, ForeignKey("federation_policies.id", ondelete="CASCADE"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class PolicyStatusRow(FederationBase):
    """The last apply status one cluster reported for one policy."""

    __tablename__ = "federation_policy_status"

    policy_id: Mapped[str] = mapped_column(
        Text, ForeignKey("federation_policies.id", ondelete="CASCADE"), primary_key=True
    )
    cluster_id: Mapped[str] = mapped_column(
        Text, ForeignKey("federation_clusters.id", ondelete="CASCADE"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    # PolicyApplyState
    state: Mapped[str] = mapped_column(Text, nullable=False)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # when the spoke saw this state; when the hub stored it
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reported_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # the generation whose outcome qualys_federation_syncs_total already counted (once each)
    synced_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_federation_policy_status_cluster_id", "cluster_id"),)


class PolicyReleaseRow(FederationBase):
    """The generation of a policy released to one cluster, for policies whose clusters get only
    what was released to them: a progressive rollout, or a suspended policy."""

    __tablename__ = "federation_policy_releases"

    policy_id: Mapped[str] = mapped_column(
        Text, ForeignKey("federation_policies.id", ondelete="CASCADE"), primary_key=True
    )
    cluster_id: Mapped[str] = mapped_column(
        Text, ForeignKey("federation_clusters.id", ondelete="CASCADE"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    released_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # what the cluster had before this release (None: nothing), for a rollback
    previous_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)

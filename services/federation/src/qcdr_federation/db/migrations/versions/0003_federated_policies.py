"""Federated policies, their versions and their per-cluster apply status (hub role).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "federation_policies",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("api_version", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_policies")),
    )
    # names are unique among live policies; a deleted one frees its name
    op.create_index(
        "ix_federation_policies_name_live",
        "federation_policies",
        ["name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "federation_policy_versions",
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["federation_policies.id"],
            name=op.f("fk_federation_policy_versions_policy_id_federation_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("policy_id", "generation", name=op.f("pk_federation_policy_versions")),
    )
    op.create_table(
        "federation_policy_status",
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("cluster_id", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("synced_generation", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["federation_clusters.id"],
            name=op.f("fk_federation_policy_status_cluster_id_federation_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["federation_policies.id"],
            name=op.f("fk_federation_policy_status_policy_id_federation_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("policy_id", "cluster_id", name=op.f("pk_federation_policy_status")),
    )
    op.create_index("ix_federation_policy_status_cluster_id", "federation_policy_status", ["cluster_id"])


def downgrade() -> None:
    op.drop_index("ix_federation_policy_status_cluster_id", table_name="federation_policy_status")
    op.drop_table("federation_policy_status")
    op.drop_table("federation_policy_versions")
    op.drop_index("ix_federation_policies_name_live", table_name="federation_policies")
    op.drop_table("federation_policies")

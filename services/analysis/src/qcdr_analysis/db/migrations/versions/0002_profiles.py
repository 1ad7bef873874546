"""Behavioural profiles per image and the workloads using them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-01 00:00:00

Hand-written and checked against the models by tests/analysis/test_migrations.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "analysis_profiles",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("reset_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('learning', 'ready')", name=op.f("ck_analysis_profiles_state_known")),
        sa.CheckConstraint("generation > 0", name=op.f("ck_analysis_profiles_generation_positive")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_analysis_profiles")),
    )
    op.create_index("ix_analysis_profiles_created_at_key", "analysis_profiles", ["created_at", "key"])
    op.create_index("ix_analysis_profiles_state", "analysis_profiles", ["state"])

    op.create_table(
        "analysis_profile_workloads",
        sa.Column("workload_key", sa.Text(), nullable=False),
        sa.Column("profile_key", sa.Text(), nullable=False),
        sa.Column("cluster", sa.Text(), nullable=True),
        sa.Column("namespace", sa.Text(), nullable=True),
        sa.Column("owner_kind", sa.Text(), nullable=True),
        sa.Column("owner_name", sa.Text(), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workload_key", name=op.f("pk_analysis_profile_workloads")),
    )
    op.create_index(
        "ix_analysis_profile_workloads_profile_key", "analysis_profile_workloads", ["profile_key"]
    )
    op.create_index(
        "ix_analysis_profile_workloads_namespace_profile_key",
        "analysis_profile_workloads",
        ["namespace", "profile_key"],
    )


def downgrade() -> None:
    op.drop_table("analysis_profile_workloads")
    op.drop_table("analysis_profiles")

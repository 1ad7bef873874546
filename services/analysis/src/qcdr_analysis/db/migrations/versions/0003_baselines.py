"""Workload baselines and population models of the workload anomaly engine.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00
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


def upgrade() -> None:
    op.create_table(
        "analysis_baselines",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("workload_key", sa.Text(), nullable=False),
        sa.Column("profile_key", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=True),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_analysis_baselines")),
    )
    op.create_index(op.f("ix_analysis_baselines_workload_key"), "analysis_baselines", ["workload_key"])
    op.create_index(op.f("ix_analysis_baselines_profile_key"), "analysis_baselines", ["profile_key"])
    op.create_table(
        "analysis_models",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("meta", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("forest", sa.LargeBinary(), nullable=False),
        sa.Column("centroids", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_analysis_models")),
    )


def downgrade() -> None:
    op.drop_table("analysis_models")
    op.drop_index(op.f("ix_analysis_baselines_profile_key"), table_name="analysis_baselines")
    op.drop_index(op.f("ix_analysis_baselines_workload_key"), table_name="analysis_baselines")
    op.drop_table("analysis_baselines")

"""Findings, received envelopes and the outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Hand-written and checked against the models by tests/analysis/test_migrations.py. Constraint
names are spelled out with op.f() so they do not depend on the naming convention at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from qcdr_common.migrations import create_outbox_table, drop_outbox_table
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "analysis_findings",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("detector", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("severity_rank", sa.SmallInteger(), nullable=False),
        sa.Column("techniques", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=True),
        sa.Column("cluster", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("evidence_event_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("envelope_id", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "severity IN ('info', 'low', 'medium', 'high', 'critical')",
            name=op.f("ck_analysis_findings_severity_known"),
        ),
        sa.CheckConstraint(
            "severity_rank BETWEEN 0 AND 4", name=op.f("ck_analysis_findings_severity_rank_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_findings")),
        sa.UniqueConstraint("envelope_id", name=op.f("uq_analysis_findings_envelope_id")),
    )
    op.create_index("ix_analysis_findings_event_time_id", "analysis_findings", ["event_time", "id"])
    op.create_index("ix_analysis_findings_created_at", "analysis_findings", ["created_at"])
    op.create_index(
        "ix_analysis_findings_namespace_event_time", "analysis_findings", ["namespace", "event_time"]
    )

    op.create_table(
        "analysis_received",
        sa.Column("envelope_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("envelope_id", name=op.f("pk_analysis_received")),
    )
    op.create_index("ix_analysis_received_received_at", "analysis_received", ["received_at"])

    create_outbox_table("analysis")


def downgrade() -> None:
    drop_outbox_table("analysis")
    op.drop_table("analysis_received")
    op.drop_table("analysis_findings")

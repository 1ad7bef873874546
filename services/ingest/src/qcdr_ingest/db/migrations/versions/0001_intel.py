"""Intel state: feed copies and the reputation cache.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Hand-written and checked against the models by tests/ingest/intel/test_migrations.py. Constraint
names are spelled out with op.f() so they do not depend on the naming convention at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intel_feed_state",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.Text(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(body IS NULL) = (fetched_at IS NULL)", name=op.f("ck_intel_feed_state_body_has_fetched_at")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_intel_feed_state")),
    )
    op.create_table(
        "intel_reputation",
        sa.Column("ip", postgresql.INET(), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("total_reports", sa.Integer(), nullable=False),
        sa.Column("usage_type", sa.Text(), nullable=True),
        sa.Column("country_code", sa.Text(), nullable=True),
        sa.Column("is_whitelisted", sa.Boolean(), nullable=True),
        sa.Column("is_tor", sa.Boolean(), nullable=True),
        sa.Column("last_reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score BETWEEN 0 AND 100", name=op.f("ck_intel_reputation_score_range")),
        sa.PrimaryKeyConstraint("ip", name=op.f("pk_intel_reputation")),
    )


def downgrade() -> None:
    op.drop_table("intel_reputation")
    op.drop_table("intel_feed_state")

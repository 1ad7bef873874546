"""What each spoke replica counted and found wrong, shared so that every replica's heartbeat
carries the same counts and problems (``federation_spoke_replicas``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 11:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "federation_spoke_replicas",
        sa.Column("replica_id", sa.Text(), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("problems", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica_id", name=op.f("pk_federation_spoke_replicas")),
    )
    op.create_index(op.f("ix_federation_spoke_replicas_seen_at"), "federation_spoke_replicas", ["seen_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_federation_spoke_replicas_seen_at"), table_name="federation_spoke_replicas")
    op.drop_table("federation_spoke_replicas")

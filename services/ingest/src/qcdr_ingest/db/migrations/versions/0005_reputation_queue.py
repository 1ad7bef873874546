"""The AbuseIPDB reputation queue: public destinations of stored events waiting for a check.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:00:00

Event storage adds each new event's public destination here (when ``ABUSEIPDB_API_KEY`` is set and
the address has no fresh answer in ``intel_reputation``); the reputation worker checks and removes
them. One row per address, so a busy destination is one check, not one per event.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intel_reputation_queue",
        sa.Column("ip", postgresql.INET(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("ip", name=op.f("pk_intel_reputation_queue")),
    )
    op.create_index("ix_intel_reputation_queue_queued_at", "intel_reputation_queue", ["queued_at"])


def downgrade() -> None:
    op.drop_index("ix_intel_reputation_queue_queued_at", table_name="intel_reputation_queue")
    op.drop_table("intel_reputation_queue")

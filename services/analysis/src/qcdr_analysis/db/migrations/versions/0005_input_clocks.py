"""The event time each input of the workload anomaly engine has reached (``analysis_input_clocks``).

Windows close at the slowest input (the Qualys poller's batch, a spoke's forward); a restart that
forgot how far each input had got would close windows ahead of the slow input's next delivery.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:00:00
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
        "analysis_input_clocks",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("marks", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_analysis_input_clocks")),
    )


def downgrade() -> None:
    op.drop_table("analysis_input_clocks")

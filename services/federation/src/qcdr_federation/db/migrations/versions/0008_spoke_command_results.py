"""The hub users' commands a spoke ran, with their results, shared by the spoke's replicas: a
command handed out again runs once (``federation_spoke_command_results``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "federation_spoke_command_results",
        sa.Column("command_id", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("body", postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_federation_spoke_command_results")),
    )
    op.create_index(
        op.f("ix_federation_spoke_command_results_started_at"),
        "federation_spoke_command_results",
        ["started_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_federation_spoke_command_results_started_at"), table_name="federation_spoke_command_results"
    )
    op.drop_table("federation_spoke_command_results")

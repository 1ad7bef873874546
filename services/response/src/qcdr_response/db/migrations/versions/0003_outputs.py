"""Outputs: the delivery queue (one row per message per sink) and the dead letters; findings can
be closed (PagerDuty resolves the incident).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
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
_JSONB = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.create_table(
        "response_output_queue",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("payload", _JSONB, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_outcome", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_output_queue")),
        sa.UniqueConstraint("message_id", name=op.f("uq_response_output_queue_message_id")),
    )
    op.create_index(
        "ix_response_output_queue_due",
        "response_output_queue",
        ["sink", "next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_response_output_queue_group", "response_output_queue", ["sink", "group_key", "id"])
    op.create_table(
        "response_output_dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("payload", _JSONB, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dead_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_output_dead_letters")),
        sa.UniqueConstraint("message_id", name=op.f("uq_response_output_dead_letters_message_id")),
    )
    op.create_index("ix_response_output_dead_letters_sink", "response_output_dead_letters", ["sink", "id"])
    op.add_column("response_findings", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("response_findings", sa.Column("closed_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("response_findings", "closed_by")
    op.drop_column("response_findings", "closed_at")
    op.drop_table("response_output_dead_letters")
    op.drop_table("response_output_queue")

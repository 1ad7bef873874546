"""Admission decisions and the outbox that publishes admission:decisions.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 00:00:00

Hand-written and checked against the models by tests/admission/webhook/test_decisions.py.
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

_NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "admission_decisions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, comment="When the webhook answered."),
        sa.Column("uid", sa.Text(), nullable=False, comment="The AdmissionRequest uid."),
        sa.Column("event_id", sa.Text(), nullable=False, comment="The admission.decision_made envelope id."),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("username", sa.Text(), nullable=False, comment="request.userInfo.username"),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("evaluated", sa.Boolean(), nullable=False, comment="False: allowed without evaluation."),
        sa.Column("skipped", sa.Text(), nullable=True, comment="Why not evaluated (metadata-only, ...)."),
        sa.Column(
            "checks",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            comment="Every check with a result.",
        ),
        sa.Column(
            "violations",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="[{source, check, message, mode}] in the engine's order.",
        ),
        sa.Column("images", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admission_decisions")),
        sa.UniqueConstraint("event_id", name=op.f("uq_admission_decisions_event_id")),
    )
    op.create_index("ix_admission_decisions_time", "admission_decisions", ["time", "id"])
    op.create_index("ix_admission_decisions_namespace_time", "admission_decisions", ["namespace", "time"])
    op.create_index(
        "ix_admission_decisions_checks", "admission_decisions", ["checks"], postgresql_using="gin"
    )
    op.create_table(
        "admission_outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("envelope_id", sa.Text(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False, comment="Stream name without the key prefix."),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False, comment="The envelope JSON, as published."),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admission_outbox")),
        sa.UniqueConstraint("envelope_id", name=op.f("uq_admission_outbox_envelope_id")),
    )
    op.create_index(
        "ix_admission_outbox_unpublished",
        "admission_outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("admission_outbox")
    op.drop_table("admission_decisions")

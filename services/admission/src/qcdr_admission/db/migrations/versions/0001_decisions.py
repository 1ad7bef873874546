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
from qcdr_common.migrations import create_outbox_table, drop_outbox_table
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
    create_outbox_table("admission")


def downgrade() -> None:
    drop_outbox_table("admission")
    op.drop_table("admission_decisions")

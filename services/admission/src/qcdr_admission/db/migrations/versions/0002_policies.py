"""Admission policies and the generation counter replicas poll to reload them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 00:00:00

Hand-written and checked against the models by tests/admission/policies/test_storage.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "admission_policies",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "spec",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="The AdmissionPolicy JSON.",
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, comment="1 on create, +1 on every update."),
        sa.Column(
            "generation", sa.BigInteger(), nullable=False, comment="The set's generation of the last change."
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False, comment="The API token's name."),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_admission_policies")),
    )
    op.create_table(
        "admission_policy_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False, comment="Bumped by every policy change."),
        sa.CheckConstraint("id = 1", name=op.f("ck_admission_policy_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admission_policy_state")),
    )
    op.execute("INSERT INTO admission_policy_state (id, generation) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("admission_policy_state")
    op.drop_table("admission_policies")

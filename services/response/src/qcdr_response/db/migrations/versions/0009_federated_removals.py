"""Removals of federated policies not held when they came, with the spoke's sequence number, so a
placement handled after its removal is known to be stale (federation/models.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 09:05:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "response_federated_removals",
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "namespace", "name", "policy_id", name="pk_response_federated_removals"
        ),
    )


def downgrade() -> None:
    op.drop_table("response_federated_removals")

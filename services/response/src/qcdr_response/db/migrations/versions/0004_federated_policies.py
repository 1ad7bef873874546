"""Federated policies: the origin of a policy placed by a federation hub (hub policy id,
generation, content hash, ...) on ``response_policies``; NULL for generated policies.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 00:00:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "response_policies",
        sa.Column("federation", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("response_policies", "federation")

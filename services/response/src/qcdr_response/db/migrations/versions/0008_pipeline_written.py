"""What the threat-intel blocklist last wrote, shared by the service's replicas.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 19:10:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "response_pipeline_written",
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False, comment="SHA-256 of the documents' hashes"),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", name="pk_response_pipeline_written"),
    )


def downgrade() -> None:
    op.drop_table("response_pipeline_written")

"""An index on ``response_received.received_at``: retention deletes the oldest envelope ids
(``QCDR_RECEIVED_RETENTION_S``) without reading the whole table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 11:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_response_received_received_at"), "response_received", ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_response_received_received_at"), table_name="response_received")

"""Playbook cooldown lookups: an index on a run's first step by playbook and time.

The planner asks, per finding, whether the playbook ran for the same workload within its
cooldown; without this index that is a scan of every action row of the table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 09:00:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_response_actions_playbook_runs",
        "response_actions",
        ["playbook", "created_at"],
        postgresql_where=sa.text("step = 1 AND playbook IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_response_actions_playbook_runs", table_name="response_actions")

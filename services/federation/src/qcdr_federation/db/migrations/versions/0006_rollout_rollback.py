"""Rolling back a failed progressive rollout: the generation each cluster had before its latest
release, and the generation of a policy whose rollout was rolled back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 11:20:00
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
    op.add_column("federation_policy_releases", sa.Column("previous_generation", sa.Integer(), nullable=True))
    op.add_column("federation_policies", sa.Column("rolled_back_generation", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("federation_policies", "rolled_back_generation")
    op.drop_column("federation_policy_releases", "previous_generation")

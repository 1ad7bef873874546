"""A sequence number on the spoke's policy messages: each placed set the spoke applies gets the next
number, carried by its ``federation.policy_placed`` and ``federation.policy_removed`` envelopes, so
the response service (several replicas, redeliveries) can tell an older message from a newer one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "federation_spoke_state",
        sa.Column("policy_sequence", sa.BigInteger(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("federation_spoke_state", "policy_sequence")

"""What spokes send the hub: forwarded item ids and findings, shared baselines, and the commands hub
users send spokes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 00:00:00
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
        "federation_received",
        sa.Column("cluster_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", "kind", "item_id", name="pk_federation_received"),
    )
    op.create_index("ix_federation_received_received_at", "federation_received", ["received_at"])
    op.create_table(
        "federation_findings",
        sa.Column("cluster_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", "id", name="pk_federation_findings"),
    )
    op.create_index("ix_federation_findings_event_time", "federation_findings", ["event_time"])
    op.execute(sa.schema.CreateSequence(sa.Sequence("federation_baselines_seq")))
    op.create_table(
        "federation_baselines",
        sa.Column("profile_key", sa.Text(), nullable=False),
        sa.Column("source_cluster_id", sa.Text(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "seq",
            sa.BigInteger(),
            server_default=sa.text("nextval('federation_baselines_seq')"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("profile_key", "source_cluster_id", name="pk_federation_baselines"),
    )
    op.create_index("ix_federation_baselines_seq", "federation_baselines", ["seq"], unique=True)
    op.create_table(
        "federation_commands",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("cluster_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("lease_s", sa.Integer(), nullable=True),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_federation_commands"),
    )
    op.create_index(
        "ix_federation_commands_cluster_state", "federation_commands", ["cluster_id", "state", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_federation_commands_cluster_state", table_name="federation_commands")
    op.drop_table("federation_commands")
    op.drop_index("ix_federation_baselines_seq", table_name="federation_baselines")
    op.drop_table("federation_baselines")
    op.execute(sa.schema.DropSequence(sa.Sequence("federation_baselines_seq")))
    op.drop_index("ix_federation_findings_event_time", table_name="federation_findings")
    op.drop_table("federation_findings")
    op.drop_index("ix_federation_received_received_at", table_name="federation_received")
    op.drop_table("federation_received")

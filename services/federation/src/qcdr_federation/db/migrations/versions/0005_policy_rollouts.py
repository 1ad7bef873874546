"""Progressive rollouts and suspension of federated policies: the generation released to each
cluster, and who suspended a policy when.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("federation_policies", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("federation_policies", sa.Column("suspended_by", sa.Text(), nullable=True))
    op.create_table(
        "federation_policy_releases",
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("cluster_id", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["federation_policies.id"],
            name=op.f("fk_federation_policy_releases_policy_id_federation_policies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["federation_clusters.id"],
            name=op.f("fk_federation_policy_releases_cluster_id_federation_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("policy_id", "cluster_id", name=op.f("pk_federation_policy_releases")),
    )


def downgrade() -> None:
    op.drop_table("federation_policy_releases")
    op.drop_column("federation_policies", "suspended_by")
    op.drop_column("federation_policies", "suspended_at")

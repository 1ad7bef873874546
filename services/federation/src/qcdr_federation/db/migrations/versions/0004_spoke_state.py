"""The spoke's own state: its registration and credential, the last good policy set and its statuses,
and the baselines it shared.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:00:00
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


_NOW = sa.text("now()")


def upgrade() -> None:
    # the credential is kept as the secret itself: the spoke presents it, and this is the spoke
    # cluster's own database (OCM's klusterlet keeps its hub kubeconfig in a Secret there too)
    op.create_table(
        "federation_spoke_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("cluster_name", sa.Text(), nullable=False),
        sa.Column("hub_url", sa.Text(), nullable=False),
        sa.Column("cluster_id", sa.Text(), nullable=True),
        sa.Column("credential_id", sa.Text(), nullable=True),
        sa.Column("credential", sa.Text(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credential_issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("policies_etag", sa.Text(), nullable=True),
        sa.Column("baselines_cursor", sa.Text(), nullable=True),
        sa.Column("last_contact_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_federation_spoke_state_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_spoke_state")),
    )
    op.create_table(
        "federation_spoke_policies",
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("enforce", sa.Boolean(), nullable=False),
        sa.Column("api_version", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=True),
        sa.Column("manifest_name", sa.Text(), nullable=False),
        sa.Column("manifest", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("policy_id", name=op.f("pk_federation_spoke_policies")),
    )
    op.create_table(
        "federation_spoke_policy_status",
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("policy_id", name=op.f("pk_federation_spoke_policy_status")),
    )
    op.create_table(
        "federation_spoke_baselines",
        sa.Column("profile_key", sa.Text(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("profile_key", name=op.f("pk_federation_spoke_baselines")),
    )


def downgrade() -> None:
    op.drop_table("federation_spoke_baselines")
    op.drop_table("federation_spoke_policy_status")
    op.drop_table("federation_spoke_policies")
    op.drop_table("federation_spoke_state")

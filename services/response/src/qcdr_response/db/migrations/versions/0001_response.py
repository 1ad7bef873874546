"""The policy lifecycle: findings received, policies, their versions, finding links, the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
Constraint names are spelled out with op.f() so they do not depend on the naming convention at
run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from qcdr_common.migrations import create_outbox_table, drop_outbox_table
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "response_received",
        sa.Column("envelope_id", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("envelope_id", name=op.f("pk_response_received")),
    )
    op.create_table(
        "response_findings",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("family", sa.Text(), nullable=True),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("envelope_id", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_findings")),
    )
    op.create_index("ix_response_findings_scope", "response_findings", ["family", "namespace"])
    op.create_table(
        "response_policies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("api_version", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("family", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("applied_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('proposed', 'approved', 'applied', 'revoked')",
            name=op.f("ck_response_policies_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_policies")),
        sa.UniqueConstraint("kind", "namespace", "name", name=op.f("uq_response_policies_identity")),
    )
    op.create_index("ix_response_policies_status", "response_policies", ["status"])
    op.create_index("ix_response_policies_family", "response_policies", ["family", "namespace"])
    op.create_table(
        "response_policy_versions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("finding_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["response_policies.id"],
            name=op.f("fk_response_policy_versions_policy_id_response_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_policy_versions")),
        sa.UniqueConstraint("policy_id", "version", name=op.f("uq_response_policy_versions_version")),
    )
    op.create_table(
        "response_finding_policy",
        sa.Column("finding_id", sa.Text(), nullable=False),
        sa.Column("policy_version_id", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("linked_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.CheckConstraint(
            "outcome IN ('linked', 'unmapped', 'dropped')", name=op.f("ck_response_finding_policy_outcome")
        ),
        sa.CheckConstraint(
            "(outcome = 'linked') = (policy_version_id IS NOT NULL)",
            name=op.f("ck_response_finding_policy_linked_has_version"),
        ),
        sa.ForeignKeyConstraint(
            ["finding_id"],
            ["response_findings.id"],
            name=op.f("fk_response_finding_policy_finding_id_response_findings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["policy_version_id"],
            ["response_policy_versions.id"],
            name=op.f("fk_response_finding_policy_policy_version_id_response_policy_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("finding_id", name=op.f("pk_response_finding_policy")),
    )
    op.create_index(
        "ix_response_finding_policy_policy_version_id", "response_finding_policy", ["policy_version_id"]
    )
    create_outbox_table("response")


def downgrade() -> None:
    drop_outbox_table("response")
    op.drop_table("response_finding_policy")
    op.drop_table("response_policy_versions")
    op.drop_table("response_policies")
    op.drop_table("response_findings")
    op.drop_table("response_received")

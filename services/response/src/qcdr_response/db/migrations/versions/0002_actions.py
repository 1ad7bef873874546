"""Response actions and their append-only audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 00:00:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
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
_STATES = (
    "'pending', 'rejected', 'waiting', 'queued', 'running', 'succeeded', 'dry_run', 'failed', "
    "'skipped', 'cancelled', 'releasing', 'released', 'undo_failed'"
)
_JSONB = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.create_table(
        "response_actions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("playbook", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("target", _JSONB, nullable=False),
        sa.Column("parameters", _JSONB, nullable=False),
        sa.Column("finding_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("require_approval", sa.Boolean(), nullable=False),
        sa.Column("continue_on_error", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("node", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("containment", sa.Boolean(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undo", _JSONB, nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("details", _JSONB, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN ({_STATES})", name=op.f("ck_response_actions_state")),
        sa.CheckConstraint("step >= 1", name=op.f("ck_response_actions_step_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_actions")),
        sa.UniqueConstraint("run_id", "step", name=op.f("uq_response_actions_run_step")),
    )
    op.create_index("ix_response_actions_state", "response_actions", ["state"])
    op.create_index("ix_response_actions_finding_id", "response_actions", ["finding_id"])
    op.create_index(
        "ix_response_actions_lease",
        "response_actions",
        ["lease_expires_at"],
        postgresql_where=sa.text("state = 'succeeded'"),
    )
    op.create_index("ix_response_actions_rate", "response_actions", ["action", "started_at"])
    op.create_table(
        "response_action_audit",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("action_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("finding_id", sa.Text(), nullable=True),
        sa.Column("detail", _JSONB, nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["response_actions.id"],
            name=op.f("fk_response_action_audit_action_id_response_actions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_action_audit")),
    )
    op.create_index("ix_response_action_audit_action_id", "response_action_audit", ["action_id", "id"])
    # Append-only: rows are never changed or removed through SQL (TRUNCATE stays possible for the
    # database owner's retention jobs).
    op.execute(
        """
        CREATE FUNCTION response_action_audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'response_action_audit is append-only (% refused)', TG_OP;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER response_action_audit_append_only
        BEFORE UPDATE OR DELETE ON response_action_audit
        FOR EACH ROW EXECUTE FUNCTION response_action_audit_append_only()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER response_action_audit_append_only ON response_action_audit")
    op.execute("DROP FUNCTION response_action_audit_append_only()")
    op.drop_table("response_action_audit")
    op.drop_table("response_actions")

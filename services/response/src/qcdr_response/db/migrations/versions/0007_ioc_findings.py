"""The CDR IOC blocklist in the service: which findings carry a network indicator.

``response_findings.ioc`` is true for a finding whose kind is a verdict (a source detection, a
threat-intel match, an ATT&CK rule, an attack chain) and which names a destination address or
port; the service regenerates ``qualys-cdr-blocklist`` and ``cdr-dynamic-blocklist`` from those.
The partial index keeps that read to the few rows it concerns. Existing rows are backfilled with
the same rule (``qcdr_response.lifecycle.iocs.IOC_KINDS``; repeated here, since a migration must
not change when the code does).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 14:20:00

Hand-written and checked against the models by tests/response/service/test_migrations.py.
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
        "response_findings",
        sa.Column("ioc", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.execute(
        "UPDATE response_findings SET ioc = true "
        "WHERE kind IN ('source', 'intel_match', 'attack_technique', 'chain') "
        "AND (payload->'network'->>'ip' IS NOT NULL OR payload->'network'->>'port' IS NOT NULL)"
    )
    op.create_index(
        "ix_response_findings_ioc",
        "response_findings",
        ["id"],
        postgresql_where=sa.text("ioc"),
    )


def downgrade() -> None:
    op.drop_index("ix_response_findings_ioc", table_name="response_findings")
    op.drop_column("response_findings", "ioc")

"""Listed domains (domain and hosts feeds) and the view analysis reads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00

``ingest_intel_domains(domain text, feeds text[], categories text[])`` is a read-only contract for
other services (see ``dns/domain_store.py``): change its columns only additively.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intel_domains",
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("feeds", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("categories", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_intel_domains")),
    )
    op.execute("CREATE VIEW ingest_intel_domains AS SELECT domain, feeds, categories FROM intel_domains")
    op.execute(
        "COMMENT ON VIEW ingest_intel_domains IS"
        " 'Threat-intel listed domains (owned by ingest; read-only for other services)'"
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ingest_intel_domains")
    op.drop_table("intel_domains")

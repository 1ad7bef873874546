"""The image-status cache (Qualys Container Security images) and the view admission reads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 00:00:00

``ingest_image_status(image_key, image_id, names text[], digests text[], scanned, max_severity,
last_scanned, last_seen)`` is a read-only contract for other services: change it only additively.
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


def upgrade() -> None:
    op.create_table(
        "ingest_images",
        sa.Column("image_key", sa.Text(), nullable=False, comment="sha256:<hex>"),
        sa.Column("image_id", sa.Text(), nullable=True),
        sa.Column("names", postgresql.ARRAY(sa.Text()), nullable=False, comment="registry/repository:tag"),
        sa.Column(
            "digests",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            comment="sha256:<hex>, own and repo digests",
        ),
        sa.Column("scanned", sa.Boolean(), nullable=False),
        sa.Column("max_severity", sa.SmallInteger(), nullable=True, comment="Qualys 1..5; null: none"),
        sa.Column(
            "vulnerabilities",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment='{"1": n, ..., "5": n}',
        ),
        sa.Column("last_scanned", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "last_seen", sa.DateTime(timezone=True), nullable=False, comment="Last poll that listed it."
        ),
        sa.PrimaryKeyConstraint("image_key", name=op.f("pk_ingest_images")),
    )
    op.execute(
        "CREATE VIEW ingest_image_status AS SELECT image_key, image_id, names, digests, scanned,"
        " max_severity, last_scanned, last_seen FROM ingest_images"
    )
    op.execute(
        "COMMENT ON VIEW ingest_image_status IS"
        " 'Container image scan status from Qualys CS (owned by ingest; read-only for other services)'"
    )


def downgrade() -> None:
    op.execute("DROP VIEW ingest_image_status")
    op.drop_table("ingest_images")

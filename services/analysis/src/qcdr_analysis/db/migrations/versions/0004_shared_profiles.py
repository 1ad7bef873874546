"""The read-only view ``analysis_shared_profiles``: the ready profiles this analysis learned, by
image digest, for the federation spoke to upload to its hub (it reads the view, never the table).

* only ``ready`` profiles keyed by an image digest (``sha256:`` + 64 hex digits, what the
  federation contract accepts): an ``image:<ref>`` or ``workload:`` key means nothing in another
  cluster;
* not the profiles taken from another cluster's shared baseline (``data.shared`` set): a baseline
  is shared by the cluster that learned it, and is never echoed back under another name;
* ``data`` without ``workloads`` (this cluster's workload names) and ``novel`` (what was seen
  after learning, with its alert times): neither is part of the baseline.

The view's ``generation`` is the new column ``analysis_profiles.ready_generation``: the row's
generation when its learning window ended. The row's own generation goes up with every write,
count flushes of a busy profile included (every 30 s), while what a ready baseline knows never
changes until a reset and a new window; publishing the row generation would have the spoke upload,
the hub store and every other spoke fetch the same baseline again twice a minute.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = "analysis_shared_profiles"


def upgrade() -> None:
    op.add_column("analysis_profiles", sa.Column("ready_generation", sa.BigInteger(), nullable=True))
    op.execute("UPDATE analysis_profiles SET ready_generation = generation WHERE state = 'ready'")
    op.execute(
        f"CREATE VIEW {VIEW} AS"  # noqa: S608  (no input: constants only)
        " SELECT key AS profile_key, ready_generation AS generation, ready_at,"
        " data - 'workloads' - 'novel' AS data, updated_at"
        " FROM analysis_profiles"
        # (not an f-string: the braces are the regex's)
        " WHERE state = 'ready' AND key ~ '^sha256:[0-9a-f]{64}$' AND data -> 'shared' IS NULL"
    )
    op.execute(
        f"COMMENT ON VIEW {VIEW} IS 'Ready image-digest profiles learned here, for federation"
        " (owned by analysis; read-only for other services)'"
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    op.drop_column("analysis_profiles", "ready_generation")

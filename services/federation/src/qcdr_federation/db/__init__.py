"""The federation service's tables and their migrations (``qcdr-federation db upgrade``).

Migrations are Alembic scripts in ``db/migrations/versions/`` (0001: clusters, credentials,
bootstrap tokens and the outbox; 0002: forwarded items, baselines and commands; 0003: federated
policies and their per-cluster status; 0004: the spoke's own state). The shared mechanics (own version table
``alembic_version_federation``, own tables only, advisory lock) are in ``qcdr_common.migrations``.
Nothing here imports the models: ``env.py`` does, when it runs.
"""

from __future__ import annotations

from pathlib import Path

from qcdr_common.migrations import ServiceMigrations, asyncpg_url

_MIGRATIONS = ServiceMigrations("federation", Path(__file__).with_name("migrations"))

VERSION_TABLE = _MIGRATIONS.version_table
MIGRATIONS_DIR = _MIGRATIONS.migrations_dir
alembic_config = _MIGRATIONS.alembic_config
upgrade = _MIGRATIONS.upgrade
downgrade = _MIGRATIONS.downgrade
current_revision = _MIGRATIONS.current_revision

__all__ = [
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "alembic_config",
    "asyncpg_url",
    "current_revision",
    "downgrade",
    "upgrade",
]

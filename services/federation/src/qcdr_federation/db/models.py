"""Every table of the federation service, for Alembic (``env.py``) and the migration tests.

Each domain package registers its models on :class:`~qcdr_federation.db.base.FederationBase`;
importing them here puts them all on one MetaData.
"""

from __future__ import annotations

from qcdr_federation.db.base import OUTBOX, FederationBase
from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow, CredentialRow

metadata = FederationBase.metadata

__all__ = ["OUTBOX", "BootstrapTokenRow", "ClusterRow", "CredentialRow", "metadata"]

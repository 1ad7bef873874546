"""Every table of the federation service, for Alembic (``env.py``) and the migration tests.

Each domain package registers its models on :class:`~qcdr_federation.db.base.FederationBase`;
importing them here puts them all on one MetaData.
"""

from __future__ import annotations

from qcdr_federation.db.base import OUTBOX, FederationBase
from qcdr_federation.hub.baselines.models import BaselineRow
from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow, CredentialRow
from qcdr_federation.hub.commands.models import CommandRow
from qcdr_federation.hub.forwarding.models import ForwardedFindingRow, ReceivedRow
from qcdr_federation.hub.policies import models as policy_models  # noqa: F401  (federated policies)
from qcdr_federation.spoke import models as spoke_models  # noqa: F401  (the spoke's tables)

metadata = FederationBase.metadata

__all__ = [
    "OUTBOX",
    "BaselineRow",
    "BootstrapTokenRow",
    "ClusterRow",
    "CommandRow",
    "CredentialRow",
    "ForwardedFindingRow",
    "ReceivedRow",
    "metadata",
]

"""The CRD controller runs in every hub replica, and a replica's garbage collection after a full
list must not delete what another replica reconciled meanwhile (found by the replicas audit).

``Informer._relist`` lists the objects, reconciles each of them, then calls ``on_listed`` with the
names of the list, and ``collect_garbage`` deletes every ``crd`` row not in it. With two replicas:

1. replica A lists FederatedTracingPolicies (``deny-shadow`` does not exist yet) and starts
   reconciling what it listed (seconds with many objects);
2. a user creates ``deny-shadow``; replica B's watch sees it and makes hub policy P1;
3. replica A finishes and collects garbage against its list: P1 was made after the list, so it
   is kept (it was deleted before: the spokes got a removal, then a new placement under another
   policy id, and versions and rollout history restarted);
4. replica A's watch then sees the object: P1, unchanged.

The interleaving is scripted with two Reconcilers on one database (what the two controllers call).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from qcdr_federation.hub.controller.kinds import CrdKind
from qcdr_federation.hub.controller.reconcile import Reconciler
from qcdr_federation.settings import FederationSettings
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.federation.controller.test_convert import fc, ftp
from tests.federation.controller.test_reconcile import Secrets, policies

pytestmark = pytest.mark.db


async def test_a_replicas_stale_list_collects_a_policy_another_replica_just_made(
    sessions: async_sessionmaker[AsyncSession], settings: FederationSettings
) -> None:
    replica_a = Reconciler(sessions, settings, Secrets())
    replica_b = Reconciler(sessions, settings, Secrets())
    await replica_a.reconcile_cluster(fc("prod-eu", labels={"env": "prod"}))

    listed_by_a: frozenset[str] = frozenset()  # 1: A's list, taken before the object existed
    listed_at = datetime.now(UTC)
    made = await replica_b.reconcile_policy(CrdKind.TRACING_POLICY, ftp())  # 2: B's watch
    assert made.ok
    first = (await policies(sessions))["deny-shadow"]

    collected = await replica_a.collect_garbage(CrdKind.TRACING_POLICY, listed_by_a, listed_at)  # 3
    again = await replica_a.reconcile_policy(CrdKind.TRACING_POLICY, ftp())  # 4: A's watch
    assert again.ok
    now = (await policies(sessions))["deny-shadow"]

    # the object never left the API server: its hub policy must not have been deleted and remade
    assert collected == [], f"replica A collected {collected} that replica B had just made"
    assert (now.id, now.generation) == (first.id, first.generation)

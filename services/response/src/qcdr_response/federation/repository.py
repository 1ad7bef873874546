"""The SQL the federation handlers add to the lifecycle's (``lifecycle.repository``)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.federation.validation import Identity


async def lock_identity(session: AsyncSession, identity: Identity) -> None:
    """Serialize placements of one object across consumers (advisory lock held until commit).

    The row lock of ``policy_for_update`` only exists once the policy does: without this, two
    replicas handling generation 1 and 2 of a new policy at once would both insert it, and one
    would fail on the identity's unique constraint.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('qcdr-response-federated'), hashtext(:key))"),
        {"key": f"{identity.kind}/{identity.namespace_key}/{identity.name}"},
    )

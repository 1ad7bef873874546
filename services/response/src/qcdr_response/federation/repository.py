"""The SQL the federation handlers add to the lifecycle's (``lifecycle.repository``)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.federation.models import FederatedRemovalRow as Removal
from qcdr_response.federation.validation import Identity

REMOVALS_KEPT = timedelta(days=1)


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


async def remember_removal(session: AsyncSession, identity: Identity, policy_id: str, sequence: int) -> None:
    """A removal of a policy not held here (yet): kept so that its late placement is stale."""
    key = {"kind": identity.kind, "namespace": identity.namespace_key, "name": identity.name}
    statement = insert(Removal).values(**key, policy_id=policy_id, sequence=sequence)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Removal.kind, Removal.namespace, Removal.name, Removal.policy_id],
            set_={
                "sequence": func.greatest(Removal.sequence, statement.excluded.sequence),
                "removed_at": func.now(),
            },
        )
    )
    await session.execute(delete(Removal).where(Removal.removed_at < func.now() - REMOVALS_KEPT))


async def removed_after(session: AsyncSession, identity: Identity, policy_id: str) -> int | None:
    """The sequence of a remembered removal of ``policy_id`` at this identity, if any."""
    return await session.scalar(
        select(Removal.sequence).where(
            Removal.kind == identity.kind,
            Removal.namespace == identity.namespace_key,
            Removal.name == identity.name,
            Removal.policy_id == policy_id,
        )
    )

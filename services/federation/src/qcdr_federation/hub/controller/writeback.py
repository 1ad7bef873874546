"""Writing ``.status`` back to federation objects: from the hub's views, through a JSON merge
patch of the ``/status`` subresource, and only when something changed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType
from prometheus_client import Counter
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.hub.clusters.schemas import ClusterRead
from qcdr_federation.hub.clusters.service import cluster_view, cluster_views
from qcdr_federation.hub.controller import status as st
from qcdr_federation.hub.controller.convert import object_generation
from qcdr_federation.hub.controller.kinds import CrdKind, as_dict, resource
from qcdr_federation.hub.policies import repository as repo
from qcdr_federation.hub.policies.issues import PolicySpecError
from qcdr_federation.hub.policies.rollout import RolloutProgress, progress_of
from qcdr_federation.hub.policies.schemas import FederatedPolicyStatus
from qcdr_federation.hub.policies.service import policy_status
from qcdr_federation.settings import FederationSettings

log = get_logger(__name__)

STATUS_PATCHES = Counter(
    "qcdr_federation_controller_status_patches_total",
    "Status write-backs to federation objects, by kind.",
    ["kind"],
)
STATUS_PATCH_FAILURES = Counter(
    "qcdr_federation_controller_status_patch_failures_total",
    "Status write-backs the API server refused or that failed (retried next time), by kind.",
    ["kind"],
)


class StatusWriter:
    def __init__(
        self,
        client: AsyncClient,
        sessions: async_sessionmaker[AsyncSession],
        settings: FederationSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.settings = settings
        self.clock = clock

    async def write(
        self,
        kind: CrdKind,
        objects: Mapping[str, Mapping[str, Any]],
        outcomes: Mapping[str, st.Outcome],
    ) -> list[dict[str, Any]]:
        """Patch the status of each object whose status differs from what the hub says now;
        returns the objects as the API server answered (to refresh a cache)."""
        if not objects:
            return []
        now = self.clock()
        bodies = await (
            self._cluster_bodies(objects, outcomes, now)
            if kind is CrdKind.CLUSTER
            else self._policy_bodies(objects, outcomes, now)
        )
        updated = []
        for name, body in bodies.items():
            current = objects[name].get("status")
            patch = st.status_patch(current if isinstance(current, Mapping) else None, body)
            if patch is None:
                continue
            try:
                answer = await self._patch(kind, name, patch)
            except Exception as exc:  # one object's refused patch must not stop the others' status
                STATUS_PATCH_FAILURES.labels(kind.value).inc()
                log.warning(
                    "federation_controller_status_patch_failed",
                    kind=kind.value,
                    name=name,
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
                continue
            if answer is not None:
                updated.append(answer)
        return updated

    async def _patch(self, kind: CrdKind, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        try:
            answer = await self.client.patch(
                resource(kind).Status, name, {"status": patch}, patch_type=PatchType.MERGE
            )
        except ApiError as exc:
            if getattr(exc.status, "code", None) == 404:  # deleted meanwhile: its watch event follows
                return None
            raise
        STATUS_PATCHES.labels(kind.value).inc()
        return as_dict(answer)

    async def _cluster_bodies(
        self, objects: Mapping[str, Mapping[str, Any]], outcomes: Mapping[str, st.Outcome], now: datetime
    ) -> dict[str, dict[str, Any]]:
        views: dict[str, ClusterRead] = {}
        async with self.sessions() as session:
            if len(objects) == 1:
                (name,) = objects
                view = await cluster_view(session, self.settings, name, now)
                if view is not None:
                    views[name] = view
            else:
                views = {v.name: v for v in await cluster_views(session, self.settings, now)}
        return {
            name: st.cluster_status(
                outcomes.get(name),
                views.get(name),
                generation=object_generation(obj),
                previous=_status(obj),
                now=now,
            )
            for name, obj in objects.items()
        }

    async def _policy_bodies(
        self, objects: Mapping[str, Mapping[str, Any]], outcomes: Mapping[str, st.Outcome], now: datetime
    ) -> dict[str, dict[str, Any]]:
        statuses: dict[str, FederatedPolicyStatus | None] = {}
        rollouts: dict[str, RolloutProgress | None] = {}
        async with self.sessions() as session:
            clusters = await repo.live_clusters(session)  # once for every policy's rollout
            for name in objects:
                outcome = outcomes.get(name)
                policy_id = outcome.policy_id if outcome is not None else None
                statuses[name] = await self._policy_status(session, policy_id) if policy_id else None
                row = await repo.get(session, policy_id) if policy_id else None
                rollouts[name] = await progress_of(session, row, now, clusters) if row is not None else None
        return {
            name: st.policy_status_body(
                outcomes.get(name),
                statuses[name],
                generation=object_generation(obj),
                previous=_status(obj),
                now=now,
                rollout=rollouts[name],
            )
            for name, obj in objects.items()
        }

    @staticmethod
    async def _policy_status(session: AsyncSession, policy_id: str) -> FederatedPolicyStatus | None:
        try:
            return await policy_status(session, policy_id)
        except PolicySpecError as exc:  # a stored spec that no longer parses: show nothing, say why
            log.warning("federation_controller_policy_status_failed", policy_id=policy_id, error=str(exc))
            return None


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = obj.get("status")
    return value if isinstance(value, Mapping) else None

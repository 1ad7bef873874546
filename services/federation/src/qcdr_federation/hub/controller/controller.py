"""The hub's federation controller: an informer per kind, the reconciler, retries with back-off
and the periodic status write-back, run together until stopped.

An object is reconciled when it appears, when its ``metadata.generation`` moves (spec changes;
status patches do not move it), on every full resync, and again after a failure (database down,
Secret not there yet) with a back-off of 1 s doubling up to ``controller_backoff_max_s``.
Reconciles run one at a time: a handful of small transactions a second is far more than
declarative objects ever need, and it keeps the outcomes simple to reason about.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lightkube import AsyncClient
from prometheus_client import Counter
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.hub.controller import status as st
from qcdr_federation.hub.controller.convert import ConversionError, object_generation, object_name
from qcdr_federation.hub.controller.kinds import CrdKind
from qcdr_federation.hub.controller.reconcile import KubeSecretReader, Notify, Reconciler, SecretReader
from qcdr_federation.hub.controller.watch import Informer
from qcdr_federation.hub.controller.writeback import StatusWriter
from qcdr_federation.settings import FederationSettings

log = get_logger(__name__)

RECONCILES = Counter(
    "qcdr_federation_controller_reconciles_total",
    "Reconciles of federation objects, by kind and outcome (ok, or the failing condition's reason).",
    ["kind", "outcome"],
)

_RETRY_INITIAL_S = 1.0
_TICK_S = 0.5


class Controller:
    def __init__(
        self,
        client: AsyncClient,
        sessions: async_sessionmaker[AsyncSession],
        settings: FederationSettings,
        *,
        notify: Notify | None = None,
        secrets: SecretReader | None = None,
        backoff_initial_s: float = 0.2,
    ) -> None:
        self.settings = settings
        self.reconciler = Reconciler(
            sessions, settings, secrets if secrets is not None else KubeSecretReader(client), notify=notify
        )
        self.writer = StatusWriter(client, sessions, settings)
        self.informers = {
            kind: Informer(
                client,
                kind,
                self,
                resync_s=settings.controller_resync_s,
                watch_timeout_s=settings.controller_watch_timeout_s,
                backoff_initial_s=backoff_initial_s,
                backoff_max_s=settings.controller_backoff_max_s,
            )
            for kind in CrdKind
        }
        self.outcomes: dict[CrdKind, dict[str, st.Outcome]] = {kind: {} for kind in CrdKind}
        # (kind, name) -> (monotonic time due, the delay that got it there); name None: a deletion
        self._retries: dict[tuple[CrdKind, str], tuple[float, float]] = {}
        self._deletions: set[tuple[CrdKind, str]] = set()
        self._lock = asyncio.Lock()

    @property
    def synced(self) -> bool:
        """Every kind has been listed at least once."""
        return all(informer.synced.is_set() for informer in self.informers.values())

    async def wait_synced(self) -> None:
        for informer in self.informers.values():
            await informer.synced.wait()

    # ------------------------------------------------------------------ informer events

    async def on_object(self, kind: CrdKind, obj: dict[str, Any], *, resync: bool) -> None:
        try:
            name = object_name(obj)
        except ConversionError:
            return
        previous = self.outcomes[kind].get(name)
        if not resync and previous is not None and previous.generation == object_generation(obj):
            # a status or metadata update (our own status patches among them): this generation
            # was reconciled already; a failed one is retried on its own schedule
            return
        await self._reconcile(kind, obj)

    async def on_deleted(self, kind: CrdKind, name: str) -> None:
        self.outcomes[kind].pop(name, None)
        self._retries.pop((kind, name), None)
        await self._delete(kind, name)

    async def on_listed(
        self, kind: CrdKind, names: frozenset[str], listed_at: datetime | None = None
    ) -> None:
        for gone in set(self.outcomes[kind]) - names:
            self.outcomes[kind].pop(gone, None)
            self._retries.pop((kind, gone), None)
        try:
            async with self._lock:
                await self.reconciler.collect_garbage(kind, names, listed_at)
        except Exception as exc:  # the next full resync collects again
            log.warning(
                "federation_controller_gc_failed", kind=kind.value, error=f"{type(exc).__name__}: {exc}"[:300]
            )

    # ------------------------------------------------------------------ work

    async def _reconcile(self, kind: CrdKind, obj: Mapping[str, Any]) -> None:
        name = object_name(obj)
        async with self._lock:
            previous = self.outcomes[kind].get(name)
            try:
                if kind is CrdKind.CLUSTER:
                    outcome = await self.reconciler.reconcile_cluster(obj)
                else:
                    outcome = await self.reconciler.reconcile_policy(kind, obj)
            except Exception as exc:
                log.warning(
                    "federation_controller_reconcile_failed",
                    kind=kind.value,
                    name=name,
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
                outcome = st.Outcome(
                    object_generation(obj),
                    ok=False,
                    reason=st.REASON_RECONCILE_ERROR,
                    message=f"the hub could not store this object yet ({type(exc).__name__}); retrying",
                    policy_id=previous.policy_id if previous is not None else None,
                    registration=previous.registration if previous is not None else None,
                    retry=True,
                )
            self.outcomes[kind][name] = outcome
            self._schedule(kind, name, outcome.retry)
        RECONCILES.labels(kind.value, "ok" if outcome.ok else outcome.reason).inc()
        if not outcome.ok:
            log.info(
                "federation_controller_not_synced",
                kind=kind.value,
                name=name,
                reason=outcome.reason,
                message=outcome.message,
            )
        await self._write_status(kind, {name: obj})

    async def _delete(self, kind: CrdKind, name: str) -> None:
        async with self._lock:
            try:
                if kind is CrdKind.CLUSTER:
                    await self.reconciler.cluster_deleted(name)
                else:
                    await self.reconciler.policy_deleted(kind, name)
                self._deletions.discard((kind, name))
            except Exception as exc:
                log.warning(
                    "federation_controller_delete_failed",
                    kind=kind.value,
                    name=name,
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
                self._deletions.add((kind, name))

    def _schedule(self, kind: CrdKind, name: str, retry: bool) -> None:
        key = (kind, name)
        if not retry:
            self._retries.pop(key, None)
            return
        _, last = self._retries.get(key, (0.0, 0.0))
        delay = min(self.settings.controller_backoff_max_s, max(_RETRY_INITIAL_S, last * 2))
        self._retries[key] = (time.monotonic() + delay, delay)

    async def _retry_due(self) -> None:
        now = time.monotonic()
        for key in [k for k, (due, _) in self._retries.items() if due <= now]:
            kind, name = key
            obj = self.informers[kind].cache.get(name)
            if obj is None:
                self._retries.pop(key, None)
                continue
            await self._reconcile(kind, obj)
        for kind, name in list(self._deletions):
            if name not in self.informers[kind].cache:
                await self._delete(kind, name)
            else:
                self._deletions.discard((kind, name))

    async def _write_status(self, kind: CrdKind, objects: Mapping[str, Mapping[str, Any]]) -> None:
        try:
            updated = await self.writer.write(kind, objects, self.outcomes[kind])
        except Exception as exc:  # the next tick writes again
            log.warning(
                "federation_controller_status_failed",
                kind=kind.value,
                error=f"{type(exc).__name__}: {exc}"[:500],
            )
            return
        for obj in updated:
            self.informers[kind].remember(obj)

    # ------------------------------------------------------------------ running

    async def write_all_status(self) -> None:
        """Every object reconciled at least once (one not reconciled yet has nothing to say)."""
        for kind, informer in self.informers.items():
            outcomes = self.outcomes[kind]
            objects = {name: obj for name, obj in informer.cache.items() if name in outcomes}
            if objects:
                await self._write_status(kind, objects)

    async def _periodic(self, stop: asyncio.Event) -> None:
        next_status = time.monotonic() + self.settings.controller_status_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK_S)
            if stop.is_set():
                return
            await self._retry_due()
            if time.monotonic() >= next_status:
                await self.write_all_status()
                next_status = time.monotonic() + self.settings.controller_status_s

    async def run(self, stop: asyncio.Event) -> None:
        log.info("federation_controller_started", kinds=[k.value for k in CrdKind])
        async with asyncio.TaskGroup() as group:
            for kind, informer in self.informers.items():
                group.create_task(informer.run(stop), name=f"federation-informer-{kind.value}")
            group.create_task(self._periodic(stop), name="federation-controller-status")
        log.info("federation_controller_stopped")

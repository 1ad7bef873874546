"""The placed sets of every cluster, kept in memory, and the wake-up of spokes waiting on a long poll.

:class:`Placements` (``app.state.placements`` on a hub) holds the rendered set of every live cluster.
It recomputes when told (:func:`notify_placements_changed`, after a commit that touched policies or
cluster labels), when another hub replica says so on the Redis pub/sub channel
``<prefix>:federation:placements``, and at the latest every ``recheck_s`` seconds; each time it first
runs one cheap fingerprint query (live policies' ids and generations, live clusters' names and
labels) and does nothing more when that did not move. So a change costs one query and one
recomputation per hub replica, however many spokes wait, and spokes whose set did not change are not
woken at all: each cluster has its own :class:`asyncio.Event`, set only when that cluster's ETag
moved.

Why pub/sub and a poll: pub/sub wakes other replicas within milliseconds but loses messages while a
connection is down; the fingerprint poll bounds how stale a replica can be whatever happens to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from qcdr_common.contracts.federation.v1 import PlacedPolicySet
from qcdr_common.logging import get_logger
from qcdr_common.streams.runner import wait_any
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.hub.policies import repository as repo
from qcdr_federation.hub.policies.metrics import REFRESHES
from qcdr_federation.hub.policies.service import live_gates, live_policies
from qcdr_federation.hub.policies.sets import (
    RENDER_CACHE,
    ClusterSet,
    Gate,
    LivePolicy,
    RenderCache,
    build_set,
)

log = get_logger("qcdr.federation.placements")

CHANNEL_SUFFIX = "federation:placements"
DEFAULT_RECHECK_S = 2.0
REFRESH_WAIT_S = 5.0

Labels = tuple[tuple[str, str], ...]


def channel_name(prefix: str) -> str:
    return f"{prefix}:{CHANNEL_SUFFIX}" if prefix else CHANNEL_SUFFIX


def _frozen(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True)
class Served:
    """A cluster's set as the pull serves it (JSON encoded once, on first use)."""

    labels: Labels
    current: ClusterSet

    @property
    def etag(self) -> str:
        return self.current.etag

    @property
    def placed(self) -> PlacedPolicySet:
        return self.current.placed

    @cached_property
    def body(self) -> bytes:
        return self.current.placed.model_dump_json().encode()


class Placements:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis | None = None,
        *,
        prefix: str = "",
        recheck_s: float = DEFAULT_RECHECK_S,
        cache: RenderCache = RENDER_CACHE,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self.channel = channel_name(prefix)
        self.recheck_s = recheck_s
        self._cache = cache
        self._fingerprint: tuple[str, str, str] | None = None
        self._policies: list[LivePolicy] = []
        self._gates: dict[str, Gate] = {}
        self._sets: dict[str, Served] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._loaded = asyncio.Event()
        self._kick = asyncio.Event()
        self._requested = 0
        self._done = 0
        self._done_changed = asyncio.Condition()
        self._refresh_lock = asyncio.Lock()
        self._running = False
        self._closing = False
        self._render_errors: set[tuple[str, int, str]] = set()
        self.version = 0  # +1 whenever some cluster's set changed
        self.errors = 0
        self.last_refresh_s = 0.0

    # ------------------------------------------------------------------ what the pull uses

    async def current(self, cluster_name: str, labels: Mapping[str, str]) -> Served:
        """The cluster's set now. ``labels``: the hub's labels of the caller as its credential check
        read them, used while this replica's snapshot does not know the cluster with those labels
        yet (declared a moment ago, or relabelled and the refresh still on its way)."""
        await self._ensure_loaded()
        return self._set_for(cluster_name, _frozen(labels))

    async def wait_changed(
        self, cluster_name: str, labels: Mapping[str, str], etag: str, timeout_s: float
    ) -> Served:
        """Hold until the cluster's set has another ETag than ``etag`` or ``timeout_s`` passed; the
        set then (the same one on a timeout)."""
        await self._ensure_loaded()
        deadline = time.monotonic() + timeout_s
        frozen: Labels | None = _frozen(labels)
        while True:
            event = self._event(cluster_name)
            served = self._set_for(cluster_name, frozen)
            remaining = deadline - time.monotonic()
            if served.etag != etag or remaining <= 0 or self._closing:
                return served
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
            if event.is_set():
                # the snapshot moved after the caller's labels were read: it knows better now
                frozen = None

    def known_etag(self, cluster_name: str) -> str | None:
        served = self._sets.get(cluster_name)
        return served.etag if served is not None else None

    def _event(self, cluster_name: str) -> asyncio.Event:
        event = self._events.get(cluster_name)
        if event is None:
            event = self._events[cluster_name] = asyncio.Event()
        return event

    def _set_for(self, cluster_name: str, labels: Labels | None) -> Served:
        served = self._sets.get(cluster_name)
        if served is not None and (labels is None or served.labels == labels):
            return served
        if labels is None:
            labels = ()
        return Served(labels, build_set(cluster_name, dict(labels), self._policies, self._cache, self._gates))

    # ------------------------------------------------------------------ refreshing

    async def refresh(self) -> bool:
        """Recompute when the fingerprint moved; True when some cluster's set changed."""
        async with self._refresh_lock:
            return await self._refresh()

    async def _refresh(self) -> bool:
        started = time.perf_counter()
        async with self._sessions() as session:
            fingerprint = await repo.placement_fingerprint(session)
            if fingerprint == self._fingerprint:
                self._loaded.set()
                REFRESHES.labels(result="unchanged").inc()
                return False
            old = self._fingerprint
            # a policy, its suspension or a rollout's release moved: every set is rebuilt
            policies_moved = old is None or old[0] != fingerprint[0] or old[2] != fingerprint[2]
            policies = await live_policies(session) if policies_moved else self._policies
            gates = await live_gates(session) if policies_moved else self._gates
            clusters = await repo.live_clusters(session)
        sets: dict[str, Served] = {}
        for cluster in clusters:
            labels = _frozen(cluster.labels)
            before = self._sets.get(cluster.name)
            if before is not None and not policies_moved and before.labels == labels:
                sets[cluster.name] = before
            else:
                sets[cluster.name] = Served(
                    labels, build_set(cluster.name, cluster.labels, policies, self._cache, gates)
                )
        changed = [
            name
            for name in set(sets) | set(self._sets)
            if (sets[name].etag if name in sets else None)
            != (self._sets[name].etag if name in self._sets else None)
        ]
        self._policies = policies
        self._gates = gates
        self._sets = sets
        self._fingerprint = fingerprint
        self._log_render_errors(policies, sets)
        if changed:
            self.version += 1
            for name in changed:
                # swap first, so a waiter woken now waits on the new event next time
                event = self._events.pop(name, None)
                if event is not None:
                    event.set()
        self._loaded.set()
        self.last_refresh_s = time.perf_counter() - started
        REFRESHES.labels(result="changed" if changed else "unchanged").inc()
        log.info(
            "federation_placements_refreshed",
            policies=len(policies),
            clusters=len(sets),
            changed=len(changed),
            seconds=round(self.last_refresh_s, 4),
        )
        return bool(changed)

    def _log_render_errors(self, policies: list[LivePolicy], sets: Mapping[str, Served]) -> None:
        generations = {p.id: p.generation for p in policies}
        now: set[tuple[str, int, str]] = set()
        for name, served in sets.items():
            for policy_id, why in served.current.errors.items():
                key = (policy_id, generations.get(policy_id, 0), name)
                now.add(key)
                if key not in self._render_errors:
                    log.warning(
                        "federation_policy_render_failed", policy_id=policy_id, cluster=name, error=why[:500]
                    )
        self._render_errors = now

    async def _ensure_loaded(self) -> None:
        if self._loaded.is_set():
            return
        if self._running:
            await asyncio.wait_for(self._loaded.wait(), REFRESH_WAIT_S)
        else:
            await self.refresh()

    async def request_refresh(self, *, wait: bool = True) -> None:
        """Ask for a recomputation; with ``wait``, return once one that started after this call
        finished (so a pull on this replica after a committed change sees it)."""
        if not self._running:
            await self.refresh()
            return
        self._requested += 1
        target = self._requested
        self._kick.set()
        if not wait:
            return
        async with self._done_changed:
            await asyncio.wait_for(self._done_changed.wait_for(lambda: self._done >= target), REFRESH_WAIT_S)

    async def changed(self) -> None:
        """After a commit that may move placements: tell the other replicas and refresh here."""
        await self.publish()
        await self.request_refresh(wait=True)

    async def publish(self) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.publish(self.channel, b"changed")
        except Exception as exc:  # the fingerprint poll catches the other replicas up
            log.warning("federation_placements_publish_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    # ------------------------------------------------------------------ background

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh on every request, on every pub/sub message, and every ``recheck_s`` anyway."""
        self._running = True
        listener = asyncio.create_task(self._listen(stop), name="federation-placements-listener")
        failing = False
        try:
            while not stop.is_set():
                target = self._requested
                self._kick.clear()
                try:
                    await self.refresh()
                    if failing:
                        log.info("federation_placements_reachable")
                    failing = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database is away: keep serving the last sets
                    self.errors += 1
                    REFRESHES.labels(result="error").inc()
                    if not failing:
                        log.warning(
                            "federation_placements_refresh_failed", error=f"{type(exc).__name__}: {exc}"[:300]
                        )
                    failing = True
                async with self._done_changed:
                    self._done = target
                    self._done_changed.notify_all()
                await wait_any(self._kick, stop, seconds=self.recheck_s)
        finally:
            self._running = False
            # shutting down: held polls answer now (304) instead of keeping the server up
            self._closing = True
            for event in self._events.values():
                event.set()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, stop: asyncio.Event) -> None:
        if self._redis is None:
            return
        backoff = 0.5
        while not stop.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                backoff = 0.5
                while not stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._requested += 1
                        self._kick.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("federation_placements_listen_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                await wait_any(stop, seconds=backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def ready(self) -> None:
        if not self._loaded.is_set():
            raise RuntimeError("federated policy placements not loaded yet")


async def notify_placements_changed(target: Any, *, prefix: str | None = None) -> None:
    """Tell every hub replica that placements may have moved (a policy or a cluster's labels
    changed): call it after the commit. ``target``: the FastAPI app, its ``app.state``, a
    :class:`Placements`, or a Redis client (then ``prefix`` is the Redis key prefix). Never raises:
    the change is committed, and the periodic fingerprint check catches up regardless."""
    state = getattr(target, "state", target)
    placements = target if isinstance(target, Placements) else getattr(state, "placements", None)
    try:
        if isinstance(placements, Placements):
            await placements.changed()
            return
        redis = target if isinstance(target, Redis) else getattr(state, "redis", None)
        if redis is None:
            log.warning("federation_placements_notify_nowhere", target=type(target).__name__)
            return
        if prefix is None:
            settings = getattr(state, "settings", None)
            prefix = str(getattr(settings, "redis_prefix", ""))
        await redis.publish(channel_name(prefix), b"changed")
    except Exception as exc:
        log.warning("federation_placements_notify_failed", error=f"{type(exc).__name__}: {exc}"[:300])

"""List + watch of one federation kind, with a local cache of its objects (an informer).

- start: list, hand every object to the handler, then watch from the list's resourceVersion;
- a dropped connection: watch again from the last resourceVersion seen, after a back-off
  (exponential with jitter, reset by the next event), so nothing is lost or replayed;
- 410 Expired (the server no longer keeps that version) or another API error: list again; objects
  the cache held that the new list lacks are handed over as deleted;
- every ``resync_s``: list again and hand every object over once more (the handler re-reads what
  it cannot watch, e.g. Secrets, and collects garbage from the names it is told exist).

Watch events are read by a separate task into a queue, so handlers (database transactions) are
never cancelled half-way when the resync deadline or a stop arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.types import OnErrorAction, OnErrorResult
from prometheus_client import Counter
from qcdr_common.logging import get_logger

from qcdr_federation.backoff import Backoff
from qcdr_federation.hub.controller.kinds import CrdKind, as_dict, resource

log = get_logger(__name__)

WATCH_RESTARTS = Counter(
    "qcdr_federation_controller_watch_restarts_total",
    "Watches of federation objects started again, by kind and why (dropped, expired, error).",
    ["kind", "reason"],
)
RELISTS = Counter(
    "qcdr_federation_controller_relists_total",
    "Full lists of federation objects (start, resync, after an expired watch or an error), by kind.",
    ["kind"],
)

_GONE = 410


class InformerHandler(Protocol):
    async def on_object(self, kind: CrdKind, obj: dict[str, Any], *, resync: bool) -> None: ...

    async def on_deleted(self, kind: CrdKind, name: str) -> None: ...

    async def on_listed(
        self, kind: CrdKind, names: frozenset[str], listed_at: datetime | None = None
    ) -> None: ...


def _raise(exc: Exception, count: int) -> OnErrorResult:
    # errors come back to the informer, which decides between re-watching and relisting
    return OnErrorResult(OnErrorAction.RAISE)


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an API failure: an ERROR watch event (ApiError) or an error response."""
    if isinstance(exc, ApiError):
        code = getattr(exc.status, "code", None)
        return code if isinstance(code, int) else None
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code
    return None


def _name(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else None


def _rv(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    rv = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return rv if isinstance(rv, str) and rv else None


class Informer:
    """Lists and watches one kind; ``cache`` holds its objects by name (as last seen)."""

    def __init__(
        self,
        client: AsyncClient,
        kind: CrdKind,
        handler: InformerHandler,
        *,
        resync_s: float,
        watch_timeout_s: int,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.client = client
        self.kind = kind
        self.handler = handler
        self.resync_s = resync_s
        self.watch_timeout_s = watch_timeout_s
        self.backoff = Backoff(backoff_max_s, base_s=backoff_initial_s)
        self.cache: dict[str, dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()  # set after the first complete list
        self.lists = 0
        self.rewatches = 0

    def remember(self, obj: Mapping[str, Any]) -> None:
        """Take a newer copy of an object (e.g. the answer to a status patch) into the cache."""
        name = _name(obj)
        if name is not None and name in self.cache:
            self.cache[name] = dict(obj)

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                try:
                    await self._relist()
                except Exception as exc:  # API down, kind not installed, forbidden, a bad answer
                    delay = self.backoff.next_delay()
                    log.warning(
                        "federation_controller_list_failed",
                        kind=self.kind.value,
                        status=status_code(exc),
                        error=f"{type(exc).__name__}: {exc}"[:500],
                        retry_in_s=round(delay, 2),
                    )
                    await self._sleep(delay, stopped)
                    continue
                await self._watch(time.monotonic() + self.resync_s, stopped)
        finally:
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopped

    async def _sleep(self, delay: float, stopped: asyncio.Task[Any]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopped), delay)

    async def _relist(self) -> None:
        listed_at = datetime.now(UTC)  # what the list may be missing: objects made after it
        listing = self.client.list(resource(self.kind))
        objects: dict[str, dict[str, Any]] = {}
        async for item in listing:
            obj = as_dict(item)
            name = _name(obj)
            if name is not None:
                objects[name] = obj
        self.resource_version = listing.resourceVersion
        self.lists += 1
        RELISTS.labels(self.kind.value).inc()
        gone = set(self.cache) - set(objects)
        self.cache = dict(objects)
        for name in sorted(gone):
            await self._guard(self.handler.on_deleted(self.kind, name))
        for obj in objects.values():
            await self._guard(self.handler.on_object(self.kind, obj, resync=True))
        await self._guard(self.handler.on_listed(self.kind, frozenset(objects), listed_at))
        self.synced.set()

    async def _guard(self, work: Any) -> None:
        """Handlers keep their own retries; an exception escaping one is a bug, logged, not fatal."""
        try:
            await work
        except Exception:
            log.exception("federation_controller_handler_failed", kind=self.kind.value)

    async def _watch(self, deadline: float, stopped: asyncio.Task[Any]) -> None:
        """Watch until the resync deadline, a stop, or a reason to list again."""
        while not stopped.done():
            queue: asyncio.Queue[tuple[str, Any] | BaseException] = asyncio.Queue()
            reader = asyncio.create_task(self._read(queue))
            try:
                failure = await self._drain(queue, deadline, stopped)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            if failure is None:  # deadline or stop
                return
            code = status_code(failure)
            if code == _GONE:
                WATCH_RESTARTS.labels(self.kind.value, "expired").inc()
                log.info(
                    "federation_controller_watch_expired", kind=self.kind.value, rv=self.resource_version
                )
                return
            delay = self.backoff.next_delay()
            if code is not None:
                # 403, 404 (CRD gone), 5xx, 504 too-large version: start over from a list
                WATCH_RESTARTS.labels(self.kind.value, "error").inc()
                log.warning(
                    "federation_controller_watch_failed",
                    kind=self.kind.value,
                    status=code,
                    error=str(failure),
                    retry_in_s=round(delay, 2),
                )
                await self._sleep(delay, stopped)
                return
            WATCH_RESTARTS.labels(self.kind.value, "dropped").inc()
            self.rewatches += 1
            log.info(
                "federation_controller_watch_dropped",
                kind=self.kind.value,
                error=f"{type(failure).__name__}: {failure}",
                rv=self.resource_version,
                retry_in_s=round(delay, 2),
            )
            await self._sleep(delay, stopped)

    async def _read(self, queue: asyncio.Queue[tuple[str, Any] | BaseException]) -> None:
        try:
            async for event_type, obj in self.client.watch(
                resource(self.kind),
                resource_version=self.resource_version,
                server_timeout=self.watch_timeout_s,
                on_error=_raise,
            ):
                queue.put_nowait((event_type, obj))
            # lightkube re-watches by itself when the server ends a stream cleanly; should the
            # generator still end, treat it as a dropped connection
            queue.put_nowait(ConnectionError("the watch ended"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(exc)

    async def _drain(
        self,
        queue: asyncio.Queue[tuple[str, Any] | BaseException],
        deadline: float,
        stopped: asyncio.Task[Any],
    ) -> BaseException | None:
        """Handle events until the deadline or a stop (None), or the reader's failure."""
        while True:
            remaining = deadline - time.monotonic()
            if stopped.done() or remaining <= 0:
                return None
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait(
                {getter, stopped}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                continue
            item = getter.result()
            if isinstance(item, BaseException):
                return item
            await self._apply(*item)

    async def _apply(self, event_type: str, raw: Any) -> None:
        obj = as_dict(raw)
        rv = _rv(obj)
        if rv is not None:
            self.resource_version = rv
        self.backoff.reset()
        name = _name(obj)
        if event_type == "BOOKMARK" or name is None:
            return
        if event_type == "DELETED":
            self.cache.pop(name, None)
            await self._guard(self.handler.on_deleted(self.kind, name))
            return
        self.cache[name] = obj
        await self._guard(self.handler.on_object(self.kind, obj, resync=False))

"""Watches: ``GET .../<plural>?watch=true``, streamed as the API server streams them.

One JSON object a line, ``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": ...}``:

- with ``resourceVersion=N``: every change after N, then changes as they happen; N older than the
  kept history gives one ``ERROR`` event (a ``Status`` 410 Expired) and the end of the stream, so a
  client relists; N newer than the store answers 504 (ResourceVersionTooLarge), like the watch cache;
- without one (or ``0``): ``ADDED`` for every current object, then changes;
- ``labelSelector``/``fieldSelector`` filter as the watch cache does: an object that stops matching is
  sent as ``DELETED``, one that starts matching as ``ADDED``;
- ``allowWatchBookmarks=true``: a ``BOOKMARK`` (an object with only ``metadata.resourceVersion``)
  every ``bookmark_interval`` seconds and when ``timeoutSeconds`` ends the watch;
- a watch ends at ``timeoutSeconds``, when the client goes away, on ``close_watches()`` and when the
  server stops (so it never holds up shutdown). ``sendInitialEvents`` (watch-list) is not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from qcdr_common.testing.k8s.events import Event, Watcher
from qcdr_common.testing.k8s.resources import ResourceType
from qcdr_common.testing.k8s.selectors import FieldRequirement, Requirement
from qcdr_common.testing.k8s.status import StatusError, bad_request
from qcdr_common.testing.k8s.store import Store

_TRUE = ("true", "1")
_FALSE = ("false", "0", "")


@dataclass(frozen=True)
class WatchRequest:
    """A parsed watch: which objects, from where, for how long."""

    rt: ResourceType
    namespace: str | None  # None: cluster-scoped, or every namespace
    labels: tuple[Requirement, ...]
    field_reqs: tuple[FieldRequirement, ...]
    resource_version: int | None  # None: start with ADDED for the current objects
    timeout: float | None
    bookmarks: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(f.matches(obj) for f in self.field_reqs)

    def translate(self, event: Event) -> tuple[str, Mapping[str, Any]] | None:
        """What this watch sends for ``event``, if anything (the watch cache's rules)."""
        if (event.group, event.kind) != (self.rt.group, self.rt.kind):
            return None
        if self.namespace is not None and event.namespace != self.namespace:
            return None
        now_matches = event.type != "DELETED" and self.matches(event.obj)
        was_matching = event.prev is not None and self.matches(event.prev)
        if now_matches:
            return ("MODIFIED" if was_matching else "ADDED"), event.obj
        if was_matching:
            # left the selection (or deleted): the last state it was seen in, at this version
            gone = dict(event.prev or {})
            gone["metadata"] = {**gone["metadata"], "resourceVersion": str(event.rv)}
            return "DELETED", gone
        return None


def parse_watch(
    query: Mapping[str, str],
    rt: ResourceType,
    namespace: str | None,
    labels: Sequence[Requirement],
    field_reqs: Sequence[FieldRequirement],
    current_rv: int,
) -> WatchRequest:
    """A watch request from its query; a bad parameter is a 400, a future resourceVersion a 504."""
    if query.get("sendInitialEvents"):
        raise bad_request("sendInitialEvents (watch-list) is not supported by the test server")
    text = query.get("resourceVersion", "")
    rv: int | None = None
    if text not in ("", "0"):
        try:
            rv = int(text)
        except ValueError:
            rv = -1
        if rv < 0:
            raise bad_request(f'invalid resourceVersion "{text}": not a non-negative integer')
        if rv > current_rv:
            raise StatusError(
                504,
                "Timeout",
                f"Timeout: Too large resource version: {rv}, current: {current_rv}",
                {
                    "causes": [
                        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                    ],
                    "retryAfterSeconds": 1,
                },
            )
    timeout: float | None = None
    seconds = query.get("timeoutSeconds", "")
    if seconds:
        try:
            timeout = float(int(seconds))
        except ValueError:
            timeout = -1.0
        if timeout < 0:
            raise bad_request(f'invalid timeoutSeconds "{seconds}": not a non-negative integer')
        timeout = timeout or None  # 0: the server's default, which here is no limit
    bookmarks = query.get("allowWatchBookmarks", "").lower()
    if bookmarks not in _TRUE + _FALSE:
        raise bad_request(f'invalid allowWatchBookmarks "{bookmarks}"')
    return WatchRequest(rt, namespace, tuple(labels), tuple(field_reqs), rv, timeout, bookmarks in _TRUE)


def _line(kind: str, obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


def _bookmark(rt: ResourceType, rv: int) -> bytes:
    return _line(
        "BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(rv)}}
    )


def _expired(rv: int, floor: int) -> bytes:
    status = StatusError(410, "Expired", f"too old resource version: {rv} ({floor})").status()
    return _line("ERROR", status)


async def stream(store: Store, request: WatchRequest, *, bookmark_interval: float) -> AsyncIterator[bytes]:
    """The event lines of one watch, until it ends (see the module docstring)."""
    loop = asyncio.get_running_loop()
    watcher = Watcher(loop)
    history = store.events
    # registered before reading anything: a change from here on wakes this watch, and every change
    # after the cursor is in the history, so none falls between reading and waiting
    history.register(watcher)
    try:
        if request.resource_version is None:
            items, rv = store.list_objects(request.rt, request.namespace, request.labels, request.field_reqs)
            for item in items:
                yield _line("ADDED", item)
            cursor = int(rv)
        else:
            cursor = request.resource_version
        started = loop.time()
        deadline = None if request.timeout is None else started + request.timeout
        next_bookmark = started + bookmark_interval
        while not watcher.closed:
            watcher.wake.clear()
            events = history.since(cursor)
            if events is None:
                yield _expired(cursor, history.floor)
                return
            for event in events:
                cursor = event.rv
                sent = request.translate(event)
                if sent is not None:
                    yield _line(*sent)
            now = loop.time()
            if deadline is not None and now >= deadline:
                if request.bookmarks:
                    yield _bookmark(request.rt, cursor)
                return
            if request.bookmarks and now >= next_bookmark:
                yield _bookmark(request.rt, cursor)
                next_bookmark = now + bookmark_interval
            waits = [
                t - now for t in (deadline, next_bookmark if request.bookmarks else None) if t is not None
            ]
            with contextlib.suppress(TimeoutError):  # a deadline or a bookmark is due
                await asyncio.wait_for(watcher.wake.wait(), min(waits) if waits else None)
    finally:
        history.unregister(watcher)

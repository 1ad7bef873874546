"""The decision log's writer: decisions are recorded in memory on the request path (an append,
nothing awaited) and written by a background task in micro-batches — the decision rows and their
``admission.decision_made`` outbox rows in one transaction — at least every ``flush_s`` or when a
batch is full. The outbox relay then publishes them to ``admission:decisions``.

Trade-off, on purpose: the request never waits for Postgres, so a crash (or kill -9) loses the
decisions of the last ``flush_s`` (0.25 s by default; at most 1 s allowed). When Postgres is
away, batches are retried a few times and then dropped (counted in
``qcdr_admission_decisions_dropped_total``), and beyond ``max_pending`` decisions waiting in memory
new ones are dropped and counted rather than growing without bound. A value PostgreSQL refuses
(SQLSTATE class 22) costs only its own decision: the batch is split until the row is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from qcdr_common.db import transaction_driver
from qcdr_common.logging import get_logger
from qcdr_common.streams.envelope import uuid7
from sqlalchemy.ext.asyncio import AsyncEngine

from qcdr_admission.db.base import OUTBOX
from qcdr_admission.decisions.event import EVENT_TYPE
from qcdr_admission.engine import Result
from qcdr_admission.metrics import DECISIONS_DROPPED, DECISIONS_WRITTEN
from qcdr_admission.streams import DECISIONS

log = get_logger(__name__)

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(slots=True)
class PendingDecision:
    """What the route hands over: cheap to build, turned into rows in the background."""

    at: float  # time.time()
    uid: str
    operation: str
    kind: str
    namespace: str | None
    name: str | None
    user: str
    allowed: bool
    skipped: str | None
    results: Sequence[Result]
    # the images, not the pod spec: holding thousands of decoded request bodies until the next
    # flush made the garbage collector's full passes (in whatever allocates next: the request
    # path's orjson.loads) the largest cost of the decision log
    images: list[str]


def images_of(pod_spec: Mapping[str, Any] | None) -> list[str]:
    """The images of every container (init, regular, ephemeral), in order, without repeats."""
    if not isinstance(pod_spec, Mapping):
        return []
    seen: dict[str, None] = {}
    for key in _CONTAINER_LISTS:
        containers = pod_spec.get(key)
        if isinstance(containers, list):
            for c in containers:
                image = c.get("image") if isinstance(c, dict) else None
                if isinstance(image, str) and image:
                    seen.setdefault(image, None)
    return list(seen)


_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def _has_nul(p: PendingDecision) -> bool:
    return (
        any(_NUL in s for s in (p.uid, p.operation, p.kind, p.user))
        or any(s is not None and _NUL in s for s in (p.namespace, p.name, p.skipped))
        or any(_NUL in image for image in p.images)
        or any(_NUL in r.source or _NUL in r.check or _NUL in r.message for r in p.results)
    )


def storable(p: PendingDecision) -> PendingDecision:
    """``p`` with every NUL character replaced by U+FFFD.

    JSON allows ``"\\u0000"`` in any string of a review (the username, a name, an image, and so
    a violation's message), PostgreSQL refuses NUL in ``text`` and ``jsonb``: one such review
    would fail the COPY of its whole batch. The row and the published event show the same text.
    """
    if not _has_nul(p):
        return p

    def clean(value: str) -> str:
        return value.replace(_NUL, _REPLACEMENT)

    return replace(
        p,
        uid=clean(p.uid),
        operation=clean(p.operation),
        kind=clean(p.kind),
        namespace=None if p.namespace is None else clean(p.namespace),
        name=None if p.name is None else clean(p.name),
        user=clean(p.user),
        skipped=None if p.skipped is None else clean(p.skipped),
        results=[
            replace(r, source=clean(r.source), check=clean(r.check), message=clean(r.message))
            for r in p.results
        ],
        images=[clean(image) for image in p.images],
    )


def _data_error(exc: BaseException) -> str | None:
    """The SQLSTATE when ``exc`` is PostgreSQL refusing a value (class 22, data exception)."""
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) and state.startswith("22") else None


_DECISION_COLUMNS = (
    "time",
    "uid",
    "event_id",
    "operation",
    "kind",
    "namespace",
    "name",
    "username",
    "allowed",
    "evaluated",
    "skipped",
    "checks",
    "violations",
    "images",
)
_OUTBOX_COLUMNS = ("envelope_id", "stream", "type", "data")


def decision_records(
    pending: Sequence[PendingDecision], cluster_id: str
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """``(decision records, outbox records)`` for a batch, in the COPY columns' order.

    The envelope is built as a plain dict in :class:`~qcdr_common.streams.envelope.Envelope`'s
    JSON shape (consumers parse it with ``Envelope.from_json``): building the pydantic model per
    decision cost more than the rest of the write.
    """
    decisions: list[tuple[Any, ...]] = []
    outbox: list[tuple[Any, ...]] = []
    emitted = datetime.now(UTC).isoformat()
    for p in map(storable, pending):
        at = datetime.fromtimestamp(p.at, UTC)
        violations = [
            {"source": r.source, "check": r.check, "message": r.message, "mode": str(r.mode)}
            for r in p.results
        ]
        images = p.images
        evaluated = p.skipped is None
        event_id = uuid7()
        at_text = at.isoformat()
        envelope = {
            "id": event_id,
            "type": EVENT_TYPE,
            "version": 1,
            "source": "admission",
            "cluster_id": cluster_id,
            "occurred_at": at_text,
            "emitted_at": emitted,
            "correlation_id": event_id,
            "causation_id": None,
            "payload": {
                "uid": p.uid,
                "time": at_text,
                "operation": p.operation,
                "kind": p.kind,
                "namespace": p.namespace,
                "name": p.name,
                "user": p.user,
                "allowed": p.allowed,
                "evaluated": evaluated,
                "skipped": p.skipped,
                "violations": violations,
                "images": images,
            },
        }
        decisions.append(
            (
                at,
                p.uid,
                event_id,
                p.operation,
                p.kind,
                p.namespace,
                p.name,
                p.user,
                p.allowed,
                evaluated,
                p.skipped,
                sorted({r.check for r in p.results}),
                orjson.dumps(violations).decode(),
                images,
            )
        )
        outbox.append((event_id, DECISIONS, EVENT_TYPE, orjson.dumps(envelope)))
    return decisions, outbox


class DecisionLog:
    """The in-memory buffer and its background writer (:meth:`run`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cluster_id: str,
        flush_s: float = 0.25,
        batch: int = 1000,
        max_pending: int = 20_000,
        attempts: int = 3,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.cluster_id = cluster_id
        self.flush_s = flush_s
        self.batch = batch
        self.max_pending = max_pending
        self.attempts = attempts
        self.on_written = on_written
        self._pending: list[PendingDecision] = []
        self._wake = asyncio.Event()

    def record(self, decision: PendingDecision) -> None:
        """Called on the request path: an append, never a wait."""
        if len(self._pending) >= self.max_pending:
            DECISIONS_DROPPED.labels(why="queue_full").inc()
            return
        self._pending.append(decision)
        if len(self._pending) >= self.batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write everything recorded so far; returns the number written."""
        written = 0
        while self._pending:
            chunk, self._pending = self._pending[: self.batch], self._pending[self.batch :]
            written += await self._write(chunk)
        return written

    async def _write(self, chunk: list[PendingDecision]) -> int:
        decisions, outbox = decision_records(chunk, self.cluster_id)
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.engine.begin() as conn:
                    # COPY (asyncpg, binary) in the SQLAlchemy transaction: several times faster
                    # than executemany, and the envelope ids are new, so nothing can conflict.
                    # Both or neither: a decision without its outbox row is never published.
                    raw = await transaction_driver(conn)
                    await raw.copy_records_to_table(
                        "admission_decisions", records=decisions, columns=_DECISION_COLUMNS
                    )
                    await raw.copy_records_to_table(OUTBOX.name, records=outbox, columns=_OUTBOX_COLUMNS)
            except Exception as exc:  # Postgres away: retry, then drop (counted), never block requests
                if (state := _data_error(exc)) is not None:
                    return await self._isolate(chunk, state)
                log.warning("decision write failed", attempt=attempt, count=len(chunk), error=repr(exc))
                if attempt < self.attempts:
                    await asyncio.sleep(0.5 * attempt)
                continue
            DECISIONS_WRITTEN.inc(len(chunk))
            if self.on_written is not None:
                self.on_written()
            return len(chunk)
        DECISIONS_DROPPED.labels(why="write_failed").inc(len(chunk))
        return 0

    async def _isolate(self, chunk: list[PendingDecision], sqlstate: str) -> int:
        """A value in ``chunk`` was refused, which no retry changes: write each half on its own,
        down to the one decision that cannot be stored, which is dropped (logged, counted)."""
        if len(chunk) == 1:
            log.warning("decision not storable", uid=chunk[0].uid, sqlstate=sqlstate)
            DECISIONS_DROPPED.labels(why="unstorable").inc()
            return 0
        half = len(chunk) // 2
        return await self._write(chunk[:half]) + await self._write(chunk[half:])

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``flush_s`` (sooner when a batch fills) until ``stop``; then a last flush."""
        while not stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_s)
            self._wake.clear()
            await self.flush()
            # at most one flush per flush_s/4 under load: batches, not a transaction per request
            rest = self.flush_s / 4 - (time.monotonic() - started)
            if rest > 0 and not stop.is_set():
                await asyncio.sleep(rest)
        await self.flush()

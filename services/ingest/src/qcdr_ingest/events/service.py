"""The rules of event intake, without HTTP: decode a batch, convert each item, prepare rows.

Bad input, decided: **the valid items of a batch are accepted and the bad ones reported**, each
by its index (and line, for NDJSON) with a reason. A source that sends one malformed alert among
a thousand loses nothing, re-sending the whole batch is harmless (event ids are idempotency keys)
and the report says exactly what to fix. Only a batch with nothing usable in it (not JSON at all,
the wrong shape, or every item rejected) is refused as a whole, and then nothing was stored.

Every stored event is announced on ``ingest:events`` once, by an ``ingest.event_observed``
envelope written to the outbox in the same transaction (a duplicate id is neither stored nor
announced again). The envelope id is derived from the event id and the moment it was received
(:func:`envelope_id`), so ``qcdr-ingest replay`` re-announces an event under the same id and a
consumer that deduplicates on envelope ids sees a replay as the duplicate it is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import orjson
from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_ingest.events.registry import Adapter, AdapterError, NotAnEventError
from qcdr_ingest.streams import EVENT_OBSERVED

ENVELOPE_VERSION = 1


class BodyFormat(StrEnum):
    JSON = "json"  # an array of items, or one item
    NDJSON = "ndjson"  # one item per line; blank lines are skipped


class BodyError(ValueError):
    """The body as a whole cannot be read as a batch; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int  # position in the batch (NDJSON: among the non-blank lines), from 0
    reason: str
    line: int | None = None  # NDJSON: the line number, from 1


@dataclass(slots=True)
class Batch:
    """Decoded items; ``lines[i]`` is item i's line number (NDJSON only)."""

    items: list[Any]
    lines: list[int] | None = None
    rejected: list[Rejection] = field(default_factory=list)  # lines that are not JSON

    @property
    def size(self) -> int:
        return len(self.items)


@dataclass(slots=True)
class Converted:
    events: list[SecurityEvent]  # unique by id, in batch order
    indexes: list[int]  # the batch index of each event
    rejected: list[Rejection]
    repeated: int  # items whose id an earlier item of the same batch already had
    ignored: int = 0  # valid items that are not events (NotAnEventError)

    def reject(self, positions: list[tuple[int, str]], lines: list[int] | None) -> None:
        """Take the events at these positions out (they could not be stored), as rejections."""
        if not positions:
            return
        gone = {position for position, _ in positions}
        for position, reason in positions:
            index = self.indexes[position]
            self.rejected.append(Rejection(index, reason, lines[index] if lines else None))
        self.rejected.sort(key=lambda r: r.index)
        self.events = [e for i, e in enumerate(self.events) if i not in gone]
        self.indexes = [x for i, x in enumerate(self.indexes) if i not in gone]


def _short(error: orjson.JSONDecodeError) -> str:
    return str(error).split(":", 1)[0][:120]


def decode(body: bytes, fmt: BodyFormat) -> Batch:
    """The batch's items; :class:`BodyError` when the body is unusable as a whole."""
    if fmt is BodyFormat.JSON:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BodyError(f"body is not valid JSON: {_short(exc)}") from None
        if isinstance(data, list):
            return Batch(data)
        if isinstance(data, dict):
            return Batch([data])  # Falco's http_output posts one alert per request
        raise BodyError(f"body must be a JSON array of items or one object, got {type(data).__name__}")
    items: list[Any] = []
    lines: list[int] = []
    rejected: list[Rejection] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
            lines.append(number)
        except orjson.JSONDecodeError as exc:
            # the placeholders keep ``items`` aligned with the non-blank lines: its length is the index
            rejected.append(Rejection(len(items), f"line is not valid JSON: {_short(exc)}", number))
            items.append(_NOT_JSON)
            lines.append(number)
    return Batch(items, lines, rejected)


class _NotJson:
    """Placeholder for an NDJSON line that did not parse (already rejected)."""


_NOT_JSON = _NotJson()


def convert(adapter: Adapter, batch: Batch, cluster: str) -> Converted:
    """Each item through the adapter; failures become rejections, never exceptions."""
    events: list[SecurityEvent] = []
    indexes: list[int] = []
    rejected: list[Rejection] = list(batch.rejected)
    seen: set[str] = set()
    repeated = ignored = 0
    lines = batch.lines
    for index, item in enumerate(batch.items):
        if item is _NOT_JSON:
            continue
        try:
            event = adapter.convert(item, cluster)
        except NotAnEventError:
            ignored += 1
            continue
        except AdapterError as exc:
            rejected.append(Rejection(index, exc.reason, lines[index] if lines else None))
            continue
        except Exception as exc:  # an adapter bug must cost one item, not the batch (and no 500)
            reason = f"cannot convert: {type(exc).__name__}: {exc}"[:300]
            rejected.append(Rejection(index, reason, lines[index] if lines else None))
            continue
        if event.id in seen:
            repeated += 1
            continue
        seen.add(event.id)
        events.append(event)
        indexes.append(index)
    rejected.sort(key=lambda r: r.index)
    return Converted(events, indexes, rejected, repeated, ignored)


# ---------------------------------------------------------------------- rows and envelopes


class EventRecord(NamedTuple):
    """One row for the bulk insert: the ``ingest_events`` columns plus what its envelope needs
    (the envelope JSON itself is assembled by the INSERT, server-side: see the repository)."""

    id: str
    source: str
    category: str
    severity: str
    event_time: datetime
    cluster: str | None
    namespace: str | None
    pod: str | None
    payload: str  # the SecurityEvent JSON
    received_at: datetime
    envelope_id: str
    envelope_cluster: str  # the envelope's cluster_id: the event's cluster, else this service's


_MS48 = (1 << 48) - 1
_B62 = (1 << 62) - 1


def envelope_id(event_id: str, received_ms: int) -> str:
    """A UUIDv7 whose time is the receipt (ms) and whose random bits are a hash of the event id:
    unique per stored event, time-ordered like any UUIDv7, and the same again on a replay."""
    h = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=10).digest(), "big")
    value = (received_ms & _MS48) << 80 | 0x7 << 76 | ((h >> 62) & 0xFFF) << 64 | 0b10 << 62 | (h & _B62)
    x = f"{value:032x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def millis(moment: datetime) -> int:
    """Whole epoch milliseconds, exactly (float ``timestamp() * 1000`` can land one below)."""
    return (moment - _EPOCH) // _MS


def receipt_time(now: datetime | None = None) -> datetime:
    """Now, cut to whole milliseconds (what ``received_at`` stores and envelope ids encode)."""
    moment = now or datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def envelope_json(
    env_id: str, payload: str, occurred_at: datetime, emitted_at: datetime, cluster_id: str, source: str
) -> bytes:
    """The :class:`~qcdr_common.streams.Envelope` JSON of one stored event, assembled around its
    payload JSON (``Envelope.to_json()`` would parse and serialize the payload again). The bulk
    insert builds the same text in SQL; tests check both against ``Envelope.from_json``."""
    return b"".join(
        (
            b'{"id":"',
            env_id.encode(),
            b'","type":"' + EVENT_OBSERVED.encode() + b'","version":1,"source":',
            orjson.dumps(source),
            b',"cluster_id":',
            orjson.dumps(cluster_id),
            b',"occurred_at":',
            orjson.dumps(occurred_at),
            b',"emitted_at":',
            orjson.dumps(emitted_at),
            b',"correlation_id":"',
            env_id.encode(),
            b'","causation_id":null,"payload":',
            payload.encode(),
            b"}",
        )
    )


def event_json(event: SecurityEvent) -> str:
    """``event.model_dump_json()``, with ``raw`` (most of an event) serialized by orjson, which
    is faster at plain JSON data than pydantic's untyped serializer (``raw`` is the last field)."""
    try:
        raw = orjson.dumps(event.raw).decode()
    except TypeError:  # not plain JSON data (ints beyond 64 bits, ...): let pydantic do all of it
        return event.model_dump_json()
    return f'{event.model_dump_json(exclude={"raw"})[:-1]},"raw":{raw}}}'


# A \u0000 escape in JSON text (an even number of backslashes before it: not an escaped "\\").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# how far ahead of this server's clock an event may be stamped (node clocks drift; analysis's
# correlation engine drops items further ahead than the same 5 minutes)
MAX_FUTURE = timedelta(minutes=5)
NUL_REASON = "contains a NUL character (\\u0000), which PostgreSQL cannot store in text or jsonb"


def too_far_ahead(
    moment: datetime, now: datetime, max_future: timedelta, name: str = "event_time"
) -> str | None:
    """The rejection reason of a time (``name``) stamped more than ``max_future`` ahead of ``now``,
    else None. One item stamped years ahead would end profiles' learning, open anomaly windows and
    hold findings open far ahead of the others (and make analysis drop every live item as late):
    refused, like analysis refuses it."""
    if moment <= now + max_future:
        return None
    ahead = int((moment - now).total_seconds())
    return (
        f"{name} is {ahead} s ahead of this server's clock (at most "
        f"{int(max_future.total_seconds())} s; is the node's clock set?)"
    )


def storable(payload: str) -> bool:
    """PostgreSQL refuses NUL in ``text`` and ``jsonb``; JSON and pydantic allow it. One such event
    must cost its own item, not fail the whole batch's insert."""
    return "\\u0000" not in payload or _NUL_ESCAPE.search(payload) is None


@dataclass(slots=True)
class Prepared:
    rows: list[EventRecord]
    unstorable: list[tuple[int, str]]  # (position in the events given, reason)


def records(
    events: Iterable[SecurityEvent],
    received_at: datetime,
    *,
    default_cluster: str,
    max_future: timedelta = MAX_FUTURE,
) -> Prepared:
    received_ms = millis(received_at)
    out = Prepared([], [])
    for position, event in enumerate(events):
        if ahead := too_far_ahead(event.event_time, received_at, max_future):
            out.unstorable.append((position, ahead))
            continue
        payload = event_json(event)
        if not storable(payload):
            out.unstorable.append((position, NUL_REASON))
            continue
        workload = event.workload
        out.rows.append(
            EventRecord(
                event.id,
                event.source,
                event.category,
                event.severity.value,
                event.event_time,
                workload.cluster,
                workload.namespace,
                workload.pod,
                payload,
                received_at,
                envelope_id(event.id, received_ms),
                workload.cluster or default_cluster,
            )
        )
    return out


def replay_record(
    event_id: str,
    payload: str,
    event_time: datetime,
    received_at: datetime,
    cluster: str,
    *,
    service: str = "ingest",
) -> tuple[str, bytes]:
    """(envelope id, envelope JSON) re-announcing a stored event under its original envelope id."""
    env_id = envelope_id(event_id, millis(received_at))
    return env_id, envelope_json(env_id, payload, event_time, datetime.now(UTC), cluster, service)


def prepare(
    adapter: Adapter,
    batch: Batch,
    cluster: str,
    *,
    default_cluster: str,
    max_future: timedelta = MAX_FUTURE,
) -> tuple[Converted, Prepared]:
    """:func:`convert` then :func:`records`; events PostgreSQL cannot store, or stamped further
    ahead of this server's clock than ``max_future``, become rejections."""
    converted = convert(adapter, batch, cluster)
    prepared = records(
        converted.events, receipt_time(), default_cluster=default_cluster, max_future=max_future
    )
    converted.reject(prepared.unstorable, batch.lines)
    return converted, prepared

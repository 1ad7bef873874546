"""Reading and requeueing dead letters (``<prefix>:<stream>:dlq``).

A dead letter keeps the original ``type`` and ``data`` fields and adds ``error``, ``entry_id``,
``stream``, ``group``, ``consumer``, ``deliveries`` and ``failed_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.names import dlq_key, stream_key
from qcdr_common.streams.producer import publish_fields


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dlq_entry_id: str
    original_entry_id: str
    stream: str
    group: str
    consumer: str
    deliveries: int
    error: str
    failed_at: str
    type: str
    data: bytes

    @property
    def envelope(self) -> Envelope | None:
        """The envelope, or None if it was dead-lettered because it did not parse."""
        try:
            return Envelope.from_json(self.data)
        except ValueError:
            return None


def _s(fields: dict[Any, Any], name: str) -> str:
    value = fields.get(name.encode(), fields.get(name, b""))
    return value.decode() if isinstance(value, bytes) else str(value)


def _dead_letter(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
    data = fields.get(b"data", fields.get("data", b""))
    return DeadLetter(
        dlq_entry_id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
        original_entry_id=_s(fields, "entry_id"),
        stream=_s(fields, "stream"),
        group=_s(fields, "group"),
        consumer=_s(fields, "consumer"),
        deliveries=int(_s(fields, "deliveries") or 0),
        error=_s(fields, "error"),
        failed_at=_s(fields, "failed_at"),
        type=_s(fields, "type"),
        data=data if isinstance(data, bytes) else str(data).encode(),
    )


async def read_dead_letters(
    redis: Redis, prefix: str, stream: str, *, count: int = 100, start: str = "-"
) -> list[DeadLetter]:
    """Up to ``count`` dead letters of ``stream``, oldest first, from ``start`` (inclusive)."""
    raw = await redis.xrange(dlq_key(prefix, stream), min=start, count=count)
    return [_dead_letter(entry_id, dict(fields or {})) for entry_id, fields in raw or []]


async def requeue(
    redis: Redis,
    prefix: str,
    stream: str,
    *,
    maxlen: int,
    entry_ids: Sequence[str] | None = None,
    count: int = 1000,
) -> int:
    """Publish dead letters back to their stream (as new entries) and delete them from the DLQ.

    Every group on the stream sees them again; handlers are idempotent, so that is safe. With
    ``entry_ids`` (DLQ entry ids) only those are requeued, else the oldest ``count``.
    """
    letters = await read_dead_letters(redis, prefix, stream, count=count)
    if entry_ids is not None:
        wanted = set(entry_ids)
        letters = [letter for letter in letters if letter.dlq_entry_id in wanted]
    if not letters:
        return 0
    key = stream_key(prefix, stream)
    await publish_fields(redis, [(key, {b"type": d.type.encode(), b"data": d.data}) for d in letters], maxlen)
    await redis.xdel(dlq_key(prefix, stream), *[d.dlq_entry_id for d in letters])
    return len(letters)

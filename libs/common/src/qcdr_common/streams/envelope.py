"""The one envelope every stream entry carries, and UUIDv7 ids.

A stream entry has exactly two fields: ``type`` (so a consumer can skip what it does not handle
without parsing) and ``data`` (the whole envelope as JSON, orjson-encoded).
"""

from __future__ import annotations

import builtins
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

M = TypeVar("M", bound=BaseModel)

_uuid7_lock = threading.Lock()
_uuid7_last_ms = 0
_uuid7_seq = 0


def uuid7() -> str:
    """A UUIDv7 (RFC 9562) as text: 48-bit Unix milliseconds, then randomness.

    Within one millisecond the 12-bit ``rand_a`` field is a counter started at a random value, so
    ids from one process sort in creation order (method 1 of RFC 9562, section 6.2); if the
    counter overflows, the timestamp is advanced by one millisecond instead.
    """
    global _uuid7_last_ms, _uuid7_seq
    with _uuid7_lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _uuid7_last_ms:
            _uuid7_last_ms = now_ms
            # start low in the 12-bit space so that a burst rarely overflows
            _uuid7_seq = int.from_bytes(os.urandom(2), "big") & 0x3FF
        else:
            _uuid7_seq += 1
            if _uuid7_seq > 0xFFF:
                _uuid7_last_ms += 1
                _uuid7_seq = 0
        ms, seq = _uuid7_last_ms, _uuid7_seq
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Envelope(BaseModel):
    """Metadata around one payload; ``id`` is the idempotency key consumers deduplicate on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    type: str = Field(min_length=1, description="Dotted, past tense: 'ingest.event_observed'.")
    version: int = Field(ge=1)
    source: str = Field(min_length=1, description="The producing service.")
    cluster_id: str
    occurred_at: AwareDatetime
    emitted_at: AwareDatetime
    correlation_id: str
    causation_id: str | None = None
    payload: dict[str, Any]

    def to_json(self) -> bytes:
        """The JSON ``model_dump_json``-equivalent, by orjson over the fields: a third of pydantic's
        JSON-mode dump, which walks every value of the untyped payload (measured: 1.3 vs 4.5 µs
        for a finding). ``OPT_UTC_Z`` writes UTC as pydantic does; values orjson has no encoding
        for (sets, bytes, models, decimals) go through pydantic's own conversion."""
        return orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "version": self.version,
                "source": self.source,
                "cluster_id": self.cluster_id,
                "occurred_at": self.occurred_at,
                "emitted_at": self.emitted_at,
                "correlation_id": self.correlation_id,
                "causation_id": self.causation_id,
                "payload": self.payload,
            },
            option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
            default=to_jsonable_python,
        )

    def to_fields(self) -> dict[bytes, bytes]:
        return {b"type": self.type.encode(), b"data": self.to_json()}

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        return cls.model_validate(orjson.loads(data))

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Envelope:
        """Parse a stream entry's fields (bytes keys, or str keys from a ``decode_responses`` client)."""
        data = fields.get(b"data") if b"data" in fields else fields.get("data")  # type: ignore[call-overload]
        if data is None:
            raise ValueError("stream entry has no 'data' field")
        return cls.from_json(data)

    def payload_as(self, model: builtins.type[M]) -> M:
        return model.model_validate(self.payload)


def new_envelope(
    type: str,
    payload: BaseModel | Mapping[str, Any],
    *,
    source: str,
    cluster_id: str,
    occurred_at: datetime,
    version: int = 1,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    id: str | None = None,
) -> Envelope:
    """Wrap a payload; a new chain of work starts with ``correlation_id`` = its own id.

    To continue a chain, pass the cause's ``correlation_id`` and its ``id`` as ``causation_id``
    (:func:`caused_by` does both).
    """
    envelope_id = id or uuid7()
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload)
    return Envelope(
        id=envelope_id,
        type=type,
        version=version,
        source=source,
        cluster_id=cluster_id,
        occurred_at=occurred_at,
        emitted_at=datetime.now(UTC),
        correlation_id=correlation_id or envelope_id,
        causation_id=causation_id,
        payload=body,
    )


def caused_by(cause: Envelope) -> dict[str, str]:
    """Keyword arguments for :func:`new_envelope` that continue ``cause``'s chain."""
    return {"correlation_id": cause.correlation_id, "causation_id": cause.id}

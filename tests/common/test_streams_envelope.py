"""Envelope, UUIDv7 and key names: pure, no Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from qcdr_common.streams import Envelope, caused_by, dlq_key, new_envelope, stream_key, uuid7

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Thing(BaseModel):
    name: str
    at: datetime


def make(**overrides: object) -> Envelope:
    kwargs: dict[str, object] = {"source": "ingest", "cluster_id": "c1", "occurred_at": T0}
    kwargs.update(overrides)
    return new_envelope("ingest.thing_observed", Thing(name="x", at=T0), **kwargs)  # type: ignore[arg-type]


def test_uuid7_is_a_version_7_uuid_and_sorts_in_creation_order() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    millis = int(ids[0].replace("-", "")[:12], 16)
    assert abs(millis / 1000 - datetime.now(UTC).timestamp()) < 5


def test_envelope_round_trips_through_stream_fields() -> None:
    env = make()
    fields = env.to_fields()
    assert set(fields) == {b"type", b"data"}
    assert fields[b"type"] == b"ingest.thing_observed"
    back = Envelope.from_fields(fields)
    assert back == env
    assert back.payload == {"name": "x", "at": "2026-03-01T12:00:00Z"}
    assert back.payload_as(Thing) == Thing(name="x", at=T0)
    # a client created with decode_responses=True hands back str keys and values
    assert Envelope.from_fields({k.decode(): v.decode() for k, v in fields.items()}) == env


def test_new_envelope_defaults_and_chains() -> None:
    first = make()
    assert first.correlation_id == first.id
    assert first.causation_id is None
    assert first.version == 1
    assert first.emitted_at.tzinfo is not None
    second = make(**caused_by(first), id="fixed-id", version=2)
    assert (second.id, second.version) == ("fixed-id", 2)
    assert second.correlation_id == first.id
    assert second.causation_id == first.id
    assert make(correlation_id="corr").correlation_id == "corr"


def test_envelope_rejects_naive_datetimes_and_missing_data() -> None:
    with pytest.raises(ValidationError):
        make(occurred_at=datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="no 'data'"):
        Envelope.from_fields({b"type": b"x"})


def test_key_names() -> None:
    assert stream_key("qcdr", "ingest:events") == "qcdr:ingest:events"
    assert dlq_key("qcdr", "analysis:findings") == "qcdr:analysis:findings:dlq"


# JSON-able leaves plus what only pydantic's conversion knows (sets, bytes, tuples, decimals, UUIDs,
# datetimes in and out of UTC); keys are strings or integers, as payload dicts may carry either.
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.binary(max_size=8).map(lambda b: b.hex().encode()),
    st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
    st.frozensets(st.integers(0, 9), max_size=3),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 99)), inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=8), _values, max_size=5))
def test_to_json_writes_what_pydantic_json_mode_writes(payload: dict[str, object]) -> None:
    envelope = new_envelope(
        "test.checked",
        payload,
        source="test",
        cluster_id="c1",
        occurred_at=datetime(2026, 3, 2, 12, 0, 0, 123456, tzinfo=UTC),
        causation_id="cause",
    )
    assert orjson.loads(envelope.to_json()) == orjson.loads(orjson.dumps(envelope.model_dump(mode="json")))
    assert Envelope.from_json(envelope.to_json()) == Envelope.model_validate_json(envelope.model_dump_json())

"""Batch decoding, conversion, row and envelope building: the rules without HTTP or a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.streams import Envelope
from qcdr_ingest.events import service
from qcdr_ingest.events.registry import Adapter, AdapterError
from qcdr_ingest.streams import EVENT_OBSERVED

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def fake_convert(raw: Any, cluster: str) -> SecurityEvent:
    if not isinstance(raw, dict) or "id" not in raw:
        raise AdapterError("id is missing")
    if raw["id"] == "boom":
        raise KeyError("bug")
    return SecurityEvent(
        id=raw["id"],
        source="test",
        category="c",
        severity=Severity.LOW,
        event_time=T0,
        workload={"cluster": cluster},
        raw=raw,
    )


ADAPTER = Adapter("test", "a test adapter", fake_convert)


def test_decode_json_array_object_and_errors() -> None:
    assert service.decode(b'[{"a":1},{"b":2}]', service.BodyFormat.JSON).items == [{"a": 1}, {"b": 2}]
    assert service.decode(b' {"a":1} ', service.BodyFormat.JSON).items == [{"a": 1}]
    with pytest.raises(service.BodyError, match="not valid JSON"):
        service.decode(b"[{", service.BodyFormat.JSON)
    with pytest.raises(service.BodyError, match="JSON array of items or one object, got int"):
        service.decode(b"12", service.BodyFormat.JSON)


def test_decode_ndjson_reports_bad_lines_in_place() -> None:
    batch = service.decode(b'{"id":"a"}\n\n  \nnot json\n{"id":"b"}\n', service.BodyFormat.NDJSON)
    assert batch.size == 3
    assert batch.lines == [1, 4, 5]
    assert [(r.index, r.line) for r in batch.rejected] == [(1, 4)]
    assert "not valid JSON" in batch.rejected[0].reason
    # each bad line at its own index among the non-blank lines (before, every earlier bad line
    # was counted twice: a sender re-sending by index re-sent the wrong items)
    many = service.decode(b'nope\n{"id":"a"}\n\nnope\nnope\n{"id":"b"}\n', service.BodyFormat.NDJSON)
    assert [(r.index, r.line) for r in many.rejected] == [(0, 1), (2, 4), (3, 5)]
    assert many.lines == [1, 2, 4, 5, 6]


def test_convert_keeps_the_good_reports_the_bad_and_folds_repeats() -> None:
    body = b'{"id":"a"}\n{"x":1}\n{"id":"a"}\nnope\n{"id":"boom"}\n{"id":"b"}\n'
    converted = service.convert(ADAPTER, service.decode(body, service.BodyFormat.NDJSON), "c9")
    assert [e.id for e in converted.events] == ["a", "b"]
    assert converted.repeated == 1
    assert [(r.index, r.line, r.reason.split(":")[0]) for r in converted.rejected] == [
        (1, 2, "id is missing"),
        (3, 4, "line is not valid JSON"),
        (4, 5, "cannot convert"),
    ]
    assert converted.events[0].workload.cluster == "c9"


def test_envelope_ids_are_uuid7_deterministic_and_time_ordered() -> None:
    ms = service.millis(T0)
    first = service.envelope_id("tetragon:abc", ms)
    parsed = uuid.UUID(first)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == ms
    assert service.envelope_id("tetragon:abc", ms) == first
    assert service.envelope_id("tetragon:abd", ms) != first
    assert service.envelope_id("tetragon:abc", ms + 1) > first


def test_receipt_time_is_whole_milliseconds() -> None:
    assert service.receipt_time(datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)).microsecond == 123000


def test_event_json_is_the_model_json() -> None:
    event = fake_convert({"id": "x", "nested": {"a": [1, 2.5, None, "é"]}}, "c")
    assert orjson.loads(service.event_json(event)) == orjson.loads(event.model_dump_json())
    huge = fake_convert({"id": "y", "n": 2**70}, "c")  # beyond orjson: pydantic does it all
    assert orjson.loads(service.event_json(huge)) == orjson.loads(huge.model_dump_json())


def test_envelope_json_is_an_envelope_around_the_event() -> None:
    event = fake_convert({"id": "x"}, 'c"1')
    (row,) = service.records([event], T0, default_cluster="default").rows
    assert (row.envelope_cluster, row.received_at, row.severity) == ('c"1', T0, "low")
    emitted = datetime.now(UTC)
    data = service.envelope_json(
        row.envelope_id, row.payload, event.event_time, emitted, row.envelope_cluster, "ingest"
    )
    envelope = Envelope.from_json(data)
    assert envelope.id == envelope.correlation_id == row.envelope_id
    assert (envelope.type, envelope.version, envelope.source) == (EVENT_OBSERVED, 1, "ingest")
    assert envelope.cluster_id == 'c"1'
    assert envelope.causation_id is None
    assert envelope.occurred_at == event.event_time
    assert envelope.emitted_at == emitted
    assert envelope.payload_as(SecurityEvent) == event


def test_records_fall_back_to_the_service_cluster() -> None:
    event = SecurityEvent(id="z", source="s", category="c", severity=Severity.INFO, event_time=T0)
    (row,) = service.records([event], T0, default_cluster="home").rows
    assert (row.cluster, row.envelope_cluster) == (None, "home")


@pytest.mark.parametrize(
    ("text", "ok"),
    [("plain", True), ("nul\x00here", False), ("a literal \\u0000 is text", True), ("\\\x00", False)],
)
def test_nul_characters_cannot_be_stored(text: str, ok: bool) -> None:
    event = fake_convert({"id": "n", "value": text}, "c")
    assert service.storable(service.event_json(event)) is ok
    prepared = service.records([fake_convert({"id": "fine"}, "c"), event], T0, default_cluster="d")
    assert [r.id for r in prepared.rows] == (["fine", "n"] if ok else ["fine"])
    assert prepared.unstorable == ([] if ok else [(1, service.NUL_REASON)])


def test_unstorable_events_become_rejections_at_their_index() -> None:
    batch = service.decode(b'{"x":1}\n{"id":"a"}\n{"id":"b"}\n', service.BodyFormat.NDJSON)
    converted = service.convert(ADAPTER, batch, "c")
    assert converted.indexes == [1, 2]
    converted.reject([(0, "bad")], batch.lines)
    assert [e.id for e in converted.events] == ["b"]
    assert converted.indexes == [2]
    assert [(r.index, r.line, r.reason) for r in converted.rejected] == [
        (0, 1, "id is missing"),
        (1, 2, "bad"),
    ]


def test_millis_is_exact() -> None:
    assert service.millis(T0) == 1_772_366_400_123
    for micro in range(0, 1_000_000, 1000):  # float timestamp() * 1000 gets some of these wrong
        moment = datetime(2026, 3, 1, 12, 0, 0, micro, tzinfo=UTC)
        assert service.millis(moment) == 1_772_366_400_000 + micro // 1000

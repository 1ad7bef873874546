"""Splunk HEC sink against the local HEC double (qcdr_common.testing.sinks.splunk_hec)."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from qcdr_common.testing.sinks.splunk_hec import SplunkHecServer, serve_splunk_hec
from qcdr_response.outputs.base import Status
from qcdr_response.outputs.registry import load_sinks
from qcdr_response.outputs.sinks.splunk_hec import SplunkHecConfig, SplunkHecSink

from tests.response.outputs.sinks._siem_messages import make_finding, make_message, make_messages

TOKEN = "5f2b3c4d-1111-4222-8333-944455566677"


@pytest.fixture
def hec() -> Iterator[SplunkHecServer]:
    with serve_splunk_hec(TOKEN) as server:
        yield server


@pytest.fixture
def hec_ack() -> Iterator[SplunkHecServer]:
    with serve_splunk_hec(TOKEN, ack=True) as server:
        yield server


def make_sink(url: str, **overrides: Any) -> SplunkHecSink:
    values: dict[str, Any] = {"name": "splunk", "url": url, "token": TOKEN, "timeout_s": 2.0}
    values.update(overrides)
    return SplunkHecSink(SplunkHecConfig.model_validate(values))


def split_events(body: bytes) -> list[dict[str, Any]]:
    """The body as HEC reads it: JSON objects one after another."""
    decoder, text, pos, events = json.JSONDecoder(), body.decode(), 0, []
    while pos < len(text):
        event, pos = decoder.raw_decode(text, pos)
        events.append(event)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_batch_is_one_request_of_concatenated_events(hec: SplunkHecServer) -> None:
    sink = make_sink(hec.url)
    messages = make_messages(3)
    try:
        outcomes = await sink.send(messages)
    finally:
        await sink.aclose()

    assert [o.status for o in outcomes] == [Status.DELIVERED] * 3
    assert len(hec.received) == 1
    request = hec.received[0]
    assert request.path == "/services/collector/event"
    assert request.headers["authorization"] == f"Splunk {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert "x-splunk-request-channel" not in request.headers
    events = split_events(request.body)
    assert len(events) == 3
    for event, message in zip(events, messages, strict=True):
        assert set(event) == {"time", "host", "source", "sourcetype", "index", "event"}
        assert isinstance(event["time"], float)
        assert event["time"] == message.last_seen.timestamp()
        assert (event["host"], event["source"], event["sourcetype"], event["index"]) == (
            "prod-eu",
            "qcdr",
            "qualys:crs",
            "main",
        )
        body = event["event"]
        assert body["delivery_id"] == message.id
        assert body["group_key"] == message.group_key
        assert body["severity"] == "high"
        assert body["category"] == "Network_Scanning_Utility"
        assert body["summary"] == message.summary()
        assert body["finding"]["id"] == message.finding.id
        assert body["finding"]["workload"]["pod"] == "api-7d9f-x2"
    assert hec.unique_keys == {m.id for m in messages}


def test_config_defaults_and_url_forms() -> None:
    config = SplunkHecConfig.model_validate(
        {"name": "splunk", "url": "https://splunk:8088/services/collector/event/", "token": TOKEN}
    )
    assert config.url == "https://splunk:8088"
    assert (config.index, config.sourcetype, config.source, config.batch_size) == (
        "main",
        "qualys:crs",
        "qcdr",
        100,
    )
    assert config.ack is False
    assert (
        SplunkHecConfig(name="s", url="https://h:8088/services/collector", token=TOKEN).url
        == "https://h:8088"
    )
    with pytest.raises(ValidationError, match="extra"):
        SplunkHecConfig.model_validate({"name": "s", "url": "https://h", "token": TOKEN, "channel": "x"})
    with pytest.raises(ValidationError):
        SplunkHecConfig.model_validate({"name": "s", "url": "ftp://h", "token": TOKEN})
    assert load_sinks().get("splunk_hec") is SplunkHecSink


async def test_host_index_sourcetype_overrides(hec: SplunkHecServer) -> None:
    hec.indexes.add("security")
    sink = make_sink(hec.url, index="security", sourcetype="qcdr:finding", host="k8s-prod")
    try:
        outcomes = await sink.send([make_message(make_finding(cluster=None))])
    finally:
        await sink.aclose()
    assert outcomes[0].status is Status.DELIVERED
    event = hec.events[0]
    assert (event["index"], event["sourcetype"], event["host"]) == ("security", "qcdr:finding", "k8s-prod")


async def test_a_wrong_token_is_retried_until_fixed(hec: SplunkHecServer) -> None:
    sink = make_sink(hec.url, token="0000-wrong")
    try:
        outcomes = await sink.send(make_messages(2))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.RETRY] * 2
    assert "Invalid token" in outcomes[0].detail
    assert hec.received == []


async def test_an_index_hec_refuses_rejects_the_first_event_and_retries_the_unread_rest(
    hec: SplunkHecServer,
) -> None:
    sink = make_sink(hec.url, index="nope")
    try:
        outcomes = await sink.send(make_messages(3))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.REJECTED, Status.RETRY, Status.RETRY]
    assert '"code":7' in outcomes[0].detail.replace(" ", "")


async def test_a_bad_event_mid_batch(hec: SplunkHecServer) -> None:
    hec.fail_next(1, 400, body={"text": "Event field is required", "code": 12, "invalid-event-number": 2})
    sink = make_sink(hec.url)
    try:
        outcomes = await sink.send(make_messages(4))
    finally:
        await sink.aclose()
    # before it: maybe indexed (sent again with the same id); it: refused; after it: never read
    assert [o.status for o in outcomes] == [Status.UNKNOWN, Status.UNKNOWN, Status.REJECTED, Status.RETRY]


async def test_invalid_data_format_without_an_event_number_rejects_the_batch(hec: SplunkHecServer) -> None:
    hec.fail_next(1, 400, body={"text": "Invalid data format", "code": 6})
    sink = make_sink(hec.url)
    try:
        outcomes = await sink.send(make_messages(2))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.REJECTED] * 2


@pytest.mark.parametrize(
    ("status", "retry_after", "text"),
    [(503, None, "Server is busy"), (500, None, "Internal server error"), (429, 7, "")],
)
async def test_busy_and_server_errors_retry(
    hec: SplunkHecServer, status: int, retry_after: int | None, text: str
) -> None:
    hec.fail_next(1, status, retry_after=retry_after)
    sink = make_sink(hec.url)
    try:
        outcomes = await sink.send(make_messages(2))
        again = await sink.send(make_messages(1))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.RETRY] * 2
    assert outcomes[0].retry_after_s == retry_after
    assert text in outcomes[0].detail
    assert again[0].status is Status.DELIVERED
    assert hec.requests == 2


async def test_a_timeout_after_sending_is_unknown_and_the_retry_keeps_the_key(hec: SplunkHecServer) -> None:
    hec.hang_next(1, seconds=1)
    sink = make_sink(hec.url, timeout_s=0.3)
    messages = make_messages(2)
    try:
        first = await sink.send(messages)
        second = await sink.send(messages)
    finally:
        await sink.aclose()
    assert [o.status for o in first] == [Status.UNKNOWN] * 2
    assert [o.status for o in second] == [Status.DELIVERED] * 2
    assert len(hec.events) == 4  # the unknown batch did arrive: duplicates, with the same keys
    assert hec.unique_keys == {m.id for m in messages}


async def test_connection_refused_is_retried() -> None:
    sink = make_sink(f"http://127.0.0.1:{free_port()}")
    try:
        outcomes = await sink.send(make_messages(2))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.RETRY] * 2
    assert "ConnectError" in outcomes[0].detail


async def test_indexer_acknowledgement(hec_ack: SplunkHecServer) -> None:
    sink = make_sink(hec_ack.url, ack=True, ack_poll_interval_s=0.05)
    other = make_sink(hec_ack.url, ack=True, ack_poll_interval_s=0.05)
    try:
        first = await sink.send(make_messages(2))
        second = await sink.send(make_messages(1))
        third = await other.send(make_messages(1))
    finally:
        await sink.aclose()
        await other.aclose()
    assert [o.status for o in first + second + third] == [Status.DELIVERED] * 4
    assert first[0].detail == "indexed (ackId 0)"
    assert second[0].detail == "indexed (ackId 1)"
    assert third[0].detail == "indexed (ackId 0)"  # its own channel
    channels = [r.headers["x-splunk-request-channel"] for r in hec_ack.received]
    assert channels[0] == channels[1] == sink.channel != other.channel == channels[2]
    uuid.UUID(sink.channel)


async def test_an_unconfirmed_batch_is_unknown(hec_ack: SplunkHecServer) -> None:
    hec_ack.withhold_acks()
    sink = make_sink(hec_ack.url, ack=True, ack_timeout_s=0.3, ack_poll_interval_s=0.05)
    try:
        outcomes = await sink.send(make_messages(2))
        hec_ack.release_acks()
        confirmed = await sink.send(make_messages(1))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.UNKNOWN] * 2
    assert "ackId 0 unconfirmed" in outcomes[0].detail
    assert confirmed[0].status is Status.DELIVERED


async def test_ack_wanted_but_off_on_the_token_is_delivered_once(hec: SplunkHecServer) -> None:
    sink = make_sink(hec.url, ack=True)
    try:
        outcomes = await sink.send(make_messages(1))
    finally:
        await sink.aclose()
    assert outcomes[0].status is Status.DELIVERED
    assert "without an ackId" in outcomes[0].detail


async def test_ack_on_the_token_but_off_in_the_sink_is_refused(hec_ack: SplunkHecServer) -> None:
    sink = make_sink(hec_ack.url)
    try:
        outcomes = await sink.send(make_messages(1))
    finally:
        await sink.aclose()
    assert outcomes[0].status is Status.REJECTED
    assert "Data channel is missing" in outcomes[0].detail


async def test_the_token_never_shows(hec: SplunkHecServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = make_sink(hec.url, token="s3cr3t-hec-token-value")
    try:
        await sink.send(make_messages(1))
    finally:
        await sink.aclose()
    for text in (sink.describe(), repr(sink), repr(sink.config), str(sink.config.model_dump()), caplog.text):
        assert "s3cr3t-hec-token-value" not in text
    assert sink.describe().startswith("splunk_hec http://127.0.0.1:")


async def test_the_double_checks_like_hec(hec: SplunkHecServer) -> None:
    url = f"{hec.url}/services/collector/event"
    auth = {"Authorization": f"Splunk {TOKEN}"}
    async with httpx.AsyncClient() as client:
        missing = await client.post(url, content=b'{"event": "x"}')
        scheme = await client.post(
            url, content=b'{"event": "x"}', headers={"Authorization": f"Bearer {TOKEN}"}
        )
        empty = await client.post(url, content=b" \n", headers=auth)
        garbage = await client.post(url, content=b"{not json", headers=auth)
        no_event = await client.post(url, content=b'{"event": "kept"}{"time": 1}', headers=auth)
        blank = await client.post(url, content=b'{"event": ""}', headers=auth)
        bad_time = await client.post(url, content=b'{"event": "x", "time": "yesterday"}', headers=auth)
        ack = await client.post(f"{hec.url}/services/collector/ack", json={"acks": [0]}, headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (401, 2)
    assert (scheme.status_code, scheme.json()["code"]) == (401, 3)
    assert (empty.status_code, empty.json()) == (400, {"text": "No data", "code": 5})
    assert (garbage.status_code, garbage.json()["code"]) == (400, 6)
    assert no_event.status_code == 400
    assert no_event.json() == {"text": "Event field is required", "code": 12, "invalid-event-number": 1}
    assert (blank.status_code, blank.json()["code"]) == (400, 13)
    assert (bad_time.status_code, bad_time.json()["code"]) == (400, 6)
    assert (ack.status_code, ack.json()["code"]) == (400, 14)
    assert [e["event"] for e in hec.events] == ["kept"]  # read in order: the one before the bad one stays

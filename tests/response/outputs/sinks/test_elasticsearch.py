"""Elasticsearch sink against the local ``_bulk`` double (qcdr_common.testing.sinks.elasticsearch)."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from qcdr_common.testing.sinks.elasticsearch import ElasticsearchServer, serve_elasticsearch
from qcdr_response.outputs.base import Status
from qcdr_response.outputs.registry import load_sinks
from qcdr_response.outputs.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchSink

from tests.response.outputs.sinks._siem_messages import make_messages

API_KEY = base64.b64encode(b"VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw").decode()
INDEX = "security-events"


@pytest.fixture
def es() -> Iterator[ElasticsearchServer]:
    with serve_elasticsearch(api_key=API_KEY, data_streams=("logs-qcdr-default",)) as server:
        yield server


def make_sink(url: str, **overrides: Any) -> ElasticsearchSink:
    values: dict[str, Any] = {"name": "elastic", "url": url, "api_key": API_KEY, "timeout_s": 2.0}
    values.update(overrides)
    return ElasticsearchSink(ElasticsearchConfig.model_validate(values))


async def send(sink: ElasticsearchSink, messages: list[Any]) -> list[Status]:
    try:
        return [o.status for o in await sink.send(messages)]
    finally:
        await sink.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_bulk_ndjson_with_index_ops_keyed_by_delivery_id(es: ElasticsearchServer) -> None:
    messages = make_messages(3)
    assert await send(make_sink(es.url), messages) == [Status.DELIVERED] * 3

    (request,) = es.received
    assert request.path == "/_bulk"
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.headers["authorization"] == f"ApiKey {API_KEY}"
    assert request.body.endswith(b"\n")
    lines = request.body.decode().split("\n")
    assert lines[-1] == ""
    assert len(lines) == 7
    for i, message in enumerate(messages):
        assert json.loads(lines[2 * i]) == {"index": {"_index": INDEX, "_id": message.id}}
        doc = json.loads(lines[2 * i + 1])
        assert doc["delivery_id"] == message.id
        assert doc["@timestamp"] == message.last_seen.isoformat()
        assert doc["finding"]["id"] == message.finding.id
        assert doc["severity"] == "high"
    assert set(es.documents(INDEX)) == {m.id for m in messages}


async def test_sending_again_overwrites_instead_of_duplicating(es: ElasticsearchServer) -> None:
    messages = make_messages(2)
    assert await send(make_sink(es.url), messages) == [Status.DELIVERED] * 2
    sink = make_sink(es.url)
    try:
        again = await sink.send(messages)
    finally:
        await sink.aclose()
    assert [o.status for o in again] == [Status.DELIVERED] * 2
    assert again[0].detail == "200 updated"
    assert es.accepted_items == 4
    assert es.unique_keys == {m.id for m in messages}
    assert len(es.documents(INDEX)) == 2


async def test_data_stream_uses_create_and_a_conflict_means_delivered(es: ElasticsearchServer) -> None:
    messages = make_messages(2)
    sink = make_sink(es.url, index="logs-qcdr-default", data_stream=True)
    try:
        first = await sink.send(messages)
        second = await sink.send(messages)
    finally:
        await sink.aclose()
    assert [o.status for o in first + second] == [Status.DELIVERED] * 4
    assert "already there" in second[0].detail
    assert "409" in second[0].detail
    action = json.loads(es.received[0].body.split(b"\n")[0])
    assert action == {"create": {"_index": "logs-qcdr-default", "_id": messages[0].id}}
    assert all("@timestamp" in doc for doc in es.documents("logs-qcdr-default").values())


async def test_index_ops_into_a_data_stream_are_rejected_per_item(es: ElasticsearchServer) -> None:
    sink = make_sink(es.url, index="logs-qcdr-default")
    try:
        outcomes = await sink.send(make_messages(1))
    finally:
        await sink.aclose()
    assert outcomes[0].status is Status.REJECTED
    assert "op_type of create" in outcomes[0].detail


async def test_only_items_failing_with_429_or_5xx_are_retried(es: ElasticsearchServer) -> None:
    es.fail_items(429, every=3)
    messages = make_messages(6)
    sink = make_sink(es.url)
    try:
        outcomes = await sink.send(messages)
        es.stop_failing_items()
        retried = [m for m, o in zip(messages, outcomes, strict=True) if o.status is Status.RETRY]
        again = await sink.send(retried)
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.DELIVERED, Status.DELIVERED, Status.RETRY] * 2
    assert "es_rejected_execution_exception" in outcomes[2].detail
    assert [o.status for o in again] == [Status.DELIVERED] * 2
    assert es.unique_keys == {m.id for m in messages}
    assert es.accepted_items == 6  # nothing stored twice


@pytest.mark.parametrize(
    ("status", "expected"), [(503, Status.RETRY), (500, Status.RETRY), (400, Status.REJECTED)]
)
async def test_item_statuses(es: ElasticsearchServer, status: int, expected: Status) -> None:
    es.fail_items(status, every=2)
    assert await send(make_sink(es.url), make_messages(2)) == [Status.DELIVERED, expected]


@pytest.mark.parametrize(("status", "retry_after"), [(429, 5), (503, None), (502, None)])
async def test_a_whole_request_refused_with_429_or_5xx_retries_all(
    es: ElasticsearchServer, status: int, retry_after: int | None
) -> None:
    es.fail_next(1, status, retry_after=retry_after)
    sink = make_sink(es.url)
    try:
        outcomes = await sink.send(make_messages(3))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == [Status.RETRY] * 3
    assert outcomes[0].retry_after_s == retry_after
    assert es.documents(INDEX) == {}


async def test_a_whole_request_refused_with_400_rejects_all(es: ElasticsearchServer) -> None:
    es.fail_next(1, 400)
    assert await send(make_sink(es.url), make_messages(2)) == [Status.REJECTED] * 2


async def test_an_unreadable_answer_is_unknown(es: ElasticsearchServer) -> None:
    es.fail_next(1, 200, body={"took": 1, "errors": False, "items": []})
    assert await send(make_sink(es.url), make_messages(2)) == [Status.UNKNOWN] * 2


async def test_a_wrong_api_key_is_retried(es: ElasticsearchServer) -> None:
    sink = make_sink(es.url, api_key=base64.b64encode(b"id:wrong").decode())
    try:
        outcomes = await sink.send(make_messages(1))
    finally:
        await sink.aclose()
    assert outcomes[0].status is Status.RETRY
    assert "security_exception" in outcomes[0].detail


async def test_basic_auth_also_from_the_url() -> None:
    with serve_elasticsearch(username="elastic", password="p@ss:word") as server:
        url = server.url.replace("http://", "http://elastic:p%40ss%3Aword@")
        sink = make_sink(url, api_key=None)
        assert sink.config.username == "elastic"
        assert sink.config.url == server.url
        assert await send(sink, make_messages(1)) == [Status.DELIVERED]
        expected = base64.b64encode(b"elastic:p@ss:word").decode()
        assert server.received[0].headers["authorization"] == f"Basic {expected}"


async def test_a_timeout_after_sending_is_unknown(es: ElasticsearchServer) -> None:
    es.hang_next(1, seconds=1)
    messages = make_messages(2)
    sink = make_sink(es.url, timeout_s=0.3)
    try:
        first = await sink.send(messages)
        second = await sink.send(messages)
    finally:
        await sink.aclose()
    assert [o.status for o in first] == [Status.UNKNOWN] * 2
    assert [o.status for o in second] == [Status.DELIVERED] * 2
    assert es.unique_keys == {m.id for m in messages}
    assert len(es.documents(INDEX)) == 2


async def test_connection_refused_is_retried() -> None:
    assert await send(make_sink(f"http://127.0.0.1:{free_port()}"), make_messages(2)) == [Status.RETRY] * 2


def test_config() -> None:
    config = ElasticsearchConfig.model_validate({"name": "elastic", "url": "https://es:9200"})
    assert (config.index, config.batch_size, config.data_stream) == ("security-events", 500, False)
    with pytest.raises(ValidationError, match="not both"):
        ElasticsearchConfig.model_validate(
            {"name": "e", "url": "https://es", "api_key": "x", "username": "u", "password": "p"}
        )
    with pytest.raises(ValidationError, match="go together"):
        ElasticsearchConfig.model_validate({"name": "e", "url": "https://es", "username": "u"})
    for index in ("Security", "a/b", "-x", "a b"):
        with pytest.raises(ValidationError):
            ElasticsearchConfig.model_validate({"name": "e", "url": "https://es", "index": index})
    with pytest.raises(ValidationError, match="extra"):
        ElasticsearchConfig.model_validate({"name": "e", "url": "https://es", "pipeline": "p"})
    assert load_sinks().get("elasticsearch") is ElasticsearchSink


async def test_secrets_never_show(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serve_elasticsearch(username="elastic", password="hunter2-secret") as server:
        url = server.url.replace("http://", "http://elastic:hunter2-secret@")
        sink = make_sink(url, api_key=None)
        await send(sink, make_messages(1))
        keyed = make_sink(server.url, api_key="a2V5LXNlY3JldC12YWx1ZQ==")
        await send(keyed, make_messages(1))
    for s in (sink, keyed):
        for text in (s.describe(), repr(s), repr(s.config), str(s.config.model_dump()), caplog.text):
            assert "hunter2-secret" not in text
            assert "a2V5LXNlY3JldC12YWx1ZQ==" not in text
    assert sink.describe().endswith("index=security-events (basic)")


async def test_the_double_parses_ndjson_strictly(es: ElasticsearchServer) -> None:
    auth = {"Authorization": f"ApiKey {API_KEY}"}
    ndjson = {**auth, "Content-Type": "application/x-ndjson"}
    line = b'{"index": {"_index": "a", "_id": "1"}}\n{"f": 1}'
    async with httpx.AsyncClient(base_url=es.url) as client:
        no_newline = await client.post("/_bulk", content=line, headers=ndjson)
        no_auth = await client.post(
            "/_bulk", content=line + b"\n", headers={"Content-Type": "application/x-ndjson"}
        )
        text_plain = await client.post(
            "/_bulk", content=line + b"\n", headers={**auth, "Content-Type": "text/plain"}
        )
        bad_action = await client.post("/_bulk", content=b'{"upsert": {}}\n{}\n', headers=ndjson)
        no_index = await client.post("/_bulk", content=b'{"index": {}}\n{}\n', headers=ndjson)
        path_index = await client.post("/b/_bulk", content=b'{"index": {}}\n{"g": 2}\n', headers=ndjson)
        bad_name = await client.post(
            "/_bulk", content=b'{"index": {"_index": "Upper"}}\n{}\n', headers=ndjson
        )
    assert no_newline.status_code == 400
    assert no_newline.json()["error"]["reason"] == "The bulk request must be terminated by a newline [\\n]"
    assert no_auth.status_code == 401
    assert no_auth.json()["error"]["type"] == "security_exception"
    assert text_plain.status_code == 406
    assert bad_action.status_code == 400
    assert "Malformed action/metadata line [1]" in bad_action.text
    assert no_index.status_code == 400
    assert "index is missing" in no_index.text
    assert path_index.status_code == 200
    assert path_index.json()["items"][0]["index"]["status"] == 201
    assert list(es.documents("b").values()) == [{"g": 2}]
    assert bad_name.json()["items"][0]["index"]["error"]["type"] == "invalid_index_name_exception"

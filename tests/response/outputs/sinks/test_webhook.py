"""The generic webhook sink against a local receiver that verifies signatures and timestamps."""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import certifi
import httpx
import pydantic
import pytest
from qcdr_common.testing.sinks.webhook import WebhookServer
from qcdr_response.outputs.base import Status
from qcdr_response.outputs.message import MessageKind, OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks.webhook import WebhookConfig, WebhookSink

from tests.response.outputs.sinks.messages import delivery
from tests.response.service.conftest import T0

SECRET = "whsec-0123456789abcdef"
TOKEN = "Bearer receiver-token-42"


def message(n: int = 1, **overrides: Any) -> OutputMessage:
    return delivery("hook", n, **overrides)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/qcdr"


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    receiver = WebhookServer(secret=SECRET)
    with receiver.serve():
        yield receiver


@pytest.fixture
async def sink(server: WebhookServer) -> AsyncIterator[WebhookSink]:
    made = WebhookSink(WebhookConfig(name="hook", url=server.url, secret=SECRET, timeout_s=2))
    yield made
    await made.aclose()


def test_registered() -> None:
    assert SINKS.get("webhook") is WebhookSink


async def test_delivers_the_documented_body_signed(server: WebhookServer, sink: WebhookSink) -> None:
    msg = message(link="https://qcdr.example/findings/1", kind=MessageKind.UPDATE, count=4)
    before = int(time.time())
    [outcome] = await sink.send([msg])
    assert outcome.status is Status.DELIVERED
    [got] = server.received
    body = got.body
    assert {k: body[k] for k in ("delivery_id", "kind", "group_key", "count", "sink", "cluster_id")} == {
        "delivery_id": msg.id,
        "kind": "update",
        "group_key": msg.group_key,
        "count": 4,
        "sink": "hook",
        "cluster_id": "prod-eu",
    }
    assert body["finding"] == msg.finding.model_dump(mode="json")
    assert body["finding_ids"] == [msg.finding.id]
    assert body["link"] == "https://qcdr.example/findings/1"
    assert body["first_seen"] == T0.isoformat()
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-qcdr-delivery"] == msg.id
    stamp = got.headers["x-qcdr-timestamp"]
    assert before <= int(stamp) <= int(time.time())
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + got.raw, hashlib.sha256).hexdigest()
    assert got.headers["x-qcdr-signature"] == f"sha256={expected}"
    assert server.unique_keys == {msg.id}


async def test_unsigned_without_a_secret() -> None:
    receiver = WebhookServer()
    with receiver.serve() as url:
        made = WebhookSink(WebhookConfig(name="hook", url=url))
        try:
            [outcome] = await made.send([message()])
        finally:
            await made.aclose()
    assert outcome.status is Status.DELIVERED
    assert "x-qcdr-signature" not in receiver.received[0].headers
    assert "x-qcdr-timestamp" in receiver.received[0].headers


async def test_extra_headers_reach_the_receiver() -> None:
    receiver = WebhookServer(required_headers={"Authorization": TOKEN})
    with receiver.serve() as url:
        right = WebhookSink(WebhookConfig(name="hook", url=url, headers={"Authorization": TOKEN}))
        wrong = WebhookSink(WebhookConfig(name="hook", url=url, headers={"Authorization": "Bearer nope"}))
        try:
            [ok] = await right.send([message(1)])
            [refused] = await wrong.send([message(2)])
        finally:
            await right.aclose()
            await wrong.aclose()
    assert ok.status is Status.DELIVERED
    assert refused.status is Status.RETRY  # 401: retried until an operator fixes the token (http.py)
    assert "401" in refused.detail
    assert receiver.unique_keys == {"delivery-0001"}


async def test_a_wrong_secret_is_refused(server: WebhookServer) -> None:
    made = WebhookSink(WebhookConfig(name="hook", url=server.url, secret="not-the-secret"))
    try:
        [outcome] = await made.send([message()])
    finally:
        await made.aclose()
    assert outcome.status is Status.RETRY
    assert "signature mismatch" in outcome.detail
    assert server.received == []


async def test_a_captured_request_cannot_be_replayed_later(server: WebhookServer, sink: WebhookSink) -> None:
    await sink.send([message()])
    [got] = server.received
    headers = {k: v for k, v in got.headers.items() if k.startswith("x-qcdr-") or k == "content-type"}
    async with httpx.AsyncClient() as client:
        again = await client.post(server.url, content=got.raw, headers=headers)
        assert again.status_code == 200  # within the window: accepted, and still one delivery
        assert server.unique_keys == {"delivery-0001"}
        assert len(server.received) == 2
        server.clock = lambda: time.time() + 301
        late = await client.post(server.url, content=got.raw, headers=headers)
        assert late.status_code == 401
        assert "tolerance" in late.text
        tampered = await client.post(
            server.url, content=got.raw.replace(b'"count":1', b'"count":9'), headers=headers
        )
        assert tampered.status_code == 401


async def test_one_request_per_message_in_order(server: WebhookServer, sink: WebhookSink) -> None:
    outcomes = await sink.send([message(1), message(2)])
    assert [o.status for o in outcomes] == [Status.DELIVERED, Status.DELIVERED]
    assert [r.key for r in server.received] == ["delivery-0001", "delivery-0002"]


@pytest.mark.parametrize(
    ("status", "retry_after", "expected", "expected_after"),
    [
        (400, None, Status.REJECTED, None),
        (404, None, Status.REJECTED, None),
        (429, 7, Status.RETRY, 7.0),
        (500, None, Status.RETRY, None),
        (503, 5, Status.RETRY, 5.0),
    ],
)
async def test_answers_become_outcomes(
    server: WebhookServer,
    sink: WebhookSink,
    status: int,
    retry_after: int | None,
    expected: Status,
    expected_after: float | None,
) -> None:
    server.fail_next(1, status=status, retry_after=retry_after)
    [outcome] = await sink.send([message()])
    assert outcome.status is expected
    assert outcome.retry_after_s == expected_after
    assert server.received == []
    [again] = await sink.send([message()])  # the fault was for one request only
    assert again.status is Status.DELIVERED


async def test_a_timeout_after_sending_is_unknown_and_the_retry_is_one_delivery(
    server: WebhookServer,
) -> None:
    made = WebhookSink(WebhookConfig(name="hook", url=server.url, secret=SECRET, timeout_s=0.3))
    server.hang_next(1, seconds=1.0)
    try:
        [first] = await made.send([message()])
        [second] = await made.send([message()])
    finally:
        await made.aclose()
    assert first.status is Status.UNKNOWN
    assert second.status is Status.DELIVERED
    assert len(server.received) == 2  # the receiver processed both ...
    assert server.unique_keys == {"delivery-0001"}  # ... with one delivery id
    assert [a.fault for a in server.attempts] == ["hang", None]


async def test_a_private_ca_bundle(server: WebhookServer) -> None:
    made = WebhookSink(WebhookConfig(name="hook", url=server.url, secret=SECRET, ca_file=certifi.where()))
    try:
        [outcome] = await made.send([message()])  # builds its TLS context without httpx's deprecation
    finally:
        await made.aclose()
    assert outcome.status is Status.DELIVERED


async def test_connection_refused_is_retried() -> None:
    made = WebhookSink(WebhookConfig(name="hook", url=closed_port_url(), timeout_s=2))
    try:
        [outcome] = await made.send([message()])
    finally:
        await made.aclose()
    assert outcome.status is Status.RETRY


@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": 1},
        {"headers": {"X-Qcdr-Signature": "forged"}},
        {"headers": {"Content-Type": "text/plain"}},
        {"headers": {"X-Ok": "a\r\nInjected: 1"}},
        {"batch_size": 2},
    ],
)
def test_config_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        WebhookConfig.model_validate({"name": "hook", "url": "https://example.com/h", **bad})


def test_a_refused_url_is_not_echoed() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        WebhookConfig(name="hook", url="ftp://user:hunter2@example.com/x?token=s3cr3t")
    assert "hunter2" not in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


async def test_secrets_never_shown(server: WebhookServer, caplog: pytest.LogCaptureFixture) -> None:
    url = server.url + "?token=url-secret-123"
    config = WebhookConfig(name="hook", url=url, secret=SECRET, headers={"Authorization": TOKEN})
    made = WebhookSink(config)
    caplog.set_level(logging.DEBUG)
    try:
        outcomes = [*await made.send([message()])]
        server.fail_next(1, status=500)
        outcomes += await made.send([message()])
    finally:
        await made.aclose()
    shown = " ".join(
        [
            made.describe(),
            repr(made),
            repr(config),
            str(config),
            config.model_dump_json(),
            *map(str, outcomes),
        ]
    )
    own_logs = " ".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    for secret in ("url-secret-123", SECRET, TOKEN):
        assert secret not in shown
        assert secret not in own_logs
    assert made.describe() == f"webhook → {server.base_url}/*** (signed, headers ['Authorization'])"


@pytest.mark.parametrize("name", ["X-Team\n", "X Team", "Content-Length", "X-Qcdr-Delivery"])
def test_header_names_are_tokens_and_not_ours(name: str) -> None:
    """A name ending in a newline passed the $-anchored check and failed each send instead."""
    with pytest.raises(pydantic.ValidationError, match="is not a valid name or is set by qcdr itself"):
        WebhookConfig(name="hook", url="https://hooks.example/x", headers={name: "v"})

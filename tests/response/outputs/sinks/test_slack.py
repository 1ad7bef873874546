"""The Slack sink against a local server that answers and checks like Slack's incoming webhooks."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from qcdr_common.testing.sinks.slack import SlackServer
from qcdr_response.outputs.base import Status
from qcdr_response.outputs.message import MessageKind, OutputMessage, when
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks.slack import SlackConfig, SlackSink

from tests.response.outputs.sinks.messages import delivery
from tests.response.service.conftest import make_finding

TOKEN = "xoxz-webhook-secret-token-0001"


def message(n: int = 1, **overrides: Any) -> OutputMessage:
    return delivery("slack", n, explanation="nmap scanned 10.0.0.0/24 & <beyond>", **overrides)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/T1/B1/{TOKEN}"


@pytest.fixture
def server() -> Iterator[SlackServer]:
    slack = SlackServer(token=TOKEN)
    with slack.serve():
        yield slack


@pytest.fixture
async def sink(server: SlackServer) -> AsyncIterator[SlackSink]:
    made = SlackSink(SlackConfig(name="slack", webhook_url=server.url, timeout_s=2))
    yield made
    await made.aclose()


async def send_one(sink: SlackSink, msg: OutputMessage) -> Any:
    [outcome] = await sink.send([msg])
    return outcome


def test_registered() -> None:
    assert SINKS.get("slack") is SlackSink


async def test_block_kit_message_with_a_colour_bar(server: SlackServer, sink: SlackSink) -> None:
    msg = message(link="https://qcdr.example/findings/1", count=3)
    outcome = await send_one(sink, msg)
    assert outcome.status is Status.DELIVERED
    [got] = server.received
    body = got.body
    assert got.headers["content-type"] == "application/json"
    assert body["text"] == "[HIGH] nmap run in a container (x3) on prod-eu/payments/api-7d9f-x2"
    [header] = body["blocks"]
    assert header["type"] == "header"
    assert header["text"] == {
        "type": "plain_text",
        "text": "[HIGH] nmap run in a container (x3)",
        "emoji": True,
    }
    assert got.key == "qcdr-delivery-0001"
    [attachment] = body["attachments"]
    assert attachment["color"] == "#ff6600"
    fields, explanation, actions, context = attachment["blocks"]
    texts = [f["text"] for f in fields["fields"]]
    assert texts[:5] == [
        "*Severity*\nHIGH",
        "*Category*\nNetwork_Scanning_Utility",
        "*Techniques*\nT1046",
        "*Where*\nprod-eu / payments / api-7d9f-x2",
        "*Count*\n3",
    ]
    assert texts[5] == "*First seen*\n2026-03-01 12:00:00 UTC"
    assert explanation["text"]["text"] == "nmap scanned 10.0.0.0/24 &amp; &lt;beyond&gt;"
    [button] = actions["elements"]
    assert button["url"] == "https://qcdr.example/findings/1"
    assert "falco" in context["elements"][0]["text"]
    assert "channel" not in body  # an app webhook ignores overrides: never sent
    assert got.meta["channel"] == "#security-alerts"
    assert server.unique_keys == {"qcdr-delivery-0001"}


async def test_no_button_without_a_link(server: SlackServer, sink: SlackSink) -> None:
    await send_one(sink, message())
    kinds = [b["type"] for b in server.received[0].body["attachments"][0]["blocks"]]
    assert kinds == ["section", "section", "context"]


@pytest.mark.parametrize(
    ("severity", "kind", "colour"),
    [
        ("critical", MessageKind.ALERT, "#ff0000"),
        ("high", MessageKind.ALERT, "#ff6600"),
        ("medium", MessageKind.UPDATE, "#ffcc00"),
        ("low", MessageKind.ALERT, "#36a64f"),
        ("critical", MessageKind.RESOLVE, "#2eb886"),
    ],
)
async def test_colour_per_severity(
    server: SlackServer, sink: SlackSink, severity: str, kind: MessageKind, colour: str
) -> None:
    assert (
        await send_one(sink, message(finding=make_finding(severity=severity), kind=kind))
    ).status is Status.DELIVERED
    body = server.received[0].body
    assert body["attachments"][0]["color"] == colour
    if kind is MessageKind.RESOLVE:
        assert body["blocks"][0]["text"]["text"].startswith("Resolved: [CRITICAL]")


async def test_long_text_is_cut_to_block_kit_limits(server: SlackServer, sink: SlackSink) -> None:
    finding = make_finding(title="T" * 400, explanation="<&>" * 2000)
    outcome = await send_one(sink, message(finding=finding, id="d" * 300))
    assert outcome.status is Status.DELIVERED, outcome.detail
    body = server.received[0].body
    assert len(body["blocks"][0]["text"]["text"]) == 150
    assert len(body["blocks"][0]["block_id"]) <= 255
    text = body["attachments"][0]["blocks"][1]["text"]["text"]
    assert len(text) <= 3000
    assert text.endswith("…")
    assert not text[:-1].endswith("&")


async def test_legacy_webhook_sends_and_honours_the_channel() -> None:
    slack = SlackServer(token=TOKEN, legacy=True, channels=["#sec-ops"], archived=["#old"])
    outcomes = {}
    with slack.serve() as url:
        for channel in ("#sec-ops", "#nowhere", "#old"):
            config = SlackConfig(
                name="slack", webhook_url=url, legacy_webhook=True, channel=channel, username="qcdr"
            )
            made = SlackSink(config)
            try:
                outcomes[channel] = await send_one(made, message())
            finally:
                await made.aclose()
    assert outcomes["#sec-ops"].status is Status.DELIVERED
    assert slack.received[0].body["channel"] == "#sec-ops"
    assert slack.received[0].body["username"] == "qcdr"
    assert slack.received[0].meta["channel"] == "#sec-ops"
    assert outcomes["#nowhere"].status is Status.REJECTED
    assert "channel_not_found" in outcomes["#nowhere"].detail
    assert outcomes["#old"].status is Status.REJECTED
    assert "channel_is_archived" in outcomes["#old"].detail


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (
            {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]},
            None,
            "invalid_blocks",
        ),
        ({"blocks": [{"type": "divider"}] * 51}, None, "invalid_blocks"),
        (
            {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]},
            None,
            "invalid_blocks",
        ),
        ({"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]}, None, "invalid_blocks"),
        ({"blocks": [{"type": "carousel"}]}, None, "invalid_blocks"),
        ({"text": "a", "attachments": [{"color": "orange"}]}, None, "invalid_attachments"),
        ({"text": "a"}, "text/plain", "invalid_payload"),
        ({}, None, "no_text"),
    ],
)
async def test_server_refuses_what_slack_refuses(
    server: SlackServer, body: dict[str, Any], content_type: str | None, error: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            server.url,
            json=body,
            headers={"content-type": content_type} if content_type else None,
        )
    assert (response.status_code, response.text) == (400, error)


async def test_server_checks_the_token(server: SlackServer) -> None:
    async with httpx.AsyncClient() as client:
        wrong = await client.post(f"{server.base_url}/services/T00000001/B00000001/nope", json={"text": "a"})
        other = await client.post(f"{server.base_url}/services/T9/B9/x", json={"text": "a"})
    assert (wrong.status_code, wrong.text) == (403, "invalid_token")
    assert (other.status_code, other.text) == (404, "no_service")


@pytest.mark.parametrize(
    ("status", "retry_after", "expected", "error"),
    [
        (403, None, Status.RETRY, "action_prohibited"),  # http.py retries 401/403 until max age
        (404, None, Status.REJECTED, "channel_not_found"),
        (410, None, Status.REJECTED, "channel_is_archived"),
        (429, 30, Status.RETRY, "rate_limited"),
        (500, None, Status.RETRY, "internal_error"),
    ],
)
async def test_answers_become_outcomes(
    server: SlackServer, sink: SlackSink, status: int, retry_after: int | None, expected: Status, error: str
) -> None:
    server.fail_next(1, status=status, retry_after=retry_after)
    outcome = await send_one(sink, message())
    assert outcome.status is expected
    assert error in outcome.detail
    assert outcome.retry_after_s == (float(retry_after) if retry_after else None)
    assert server.received == []


async def test_timeout_is_unknown_then_the_same_key(server: SlackServer) -> None:
    made = SlackSink(SlackConfig(name="slack", webhook_url=server.url, timeout_s=0.3))
    server.hang_next(1, seconds=1.0)
    try:
        first = await send_one(made, message())
        second = await send_one(made, message())
    finally:
        await made.aclose()
    assert (first.status, second.status) == (Status.UNKNOWN, Status.DELIVERED)
    assert len(server.received) == 2
    assert server.unique_keys == {"qcdr-delivery-0001"}


async def test_connection_refused_is_retried() -> None:
    made = SlackSink(SlackConfig(name="slack", webhook_url=closed_port_url(), timeout_s=2))
    try:
        outcome = await send_one(made, message())
    finally:
        await made.aclose()
    assert outcome.status is Status.RETRY
    assert TOKEN not in outcome.detail


def test_a_zero_time_shows_a_four_digit_year() -> None:
    """Go's zero time (a "no time" placeholder) reads 0001-01-01, not strftime's unpadded 1-01-01."""
    assert when(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01 00:00:00 UTC"


def test_config() -> None:
    config = SlackConfig(name="slack", webhook_url="https://hooks.slack.com/services/T1/B1/x")
    assert (config.batch_size, config.channel, config.legacy_webhook) == (1, "#security-alerts", False)
    assert config.rate_per_s == 1.0  # Slack's documented pace for one incoming webhook
    with pytest.raises(ValueError, match="extra"):
        SlackConfig.model_validate({"name": "slack", "webhook_url": "https://h/x", "webhookurl": "y"})
    with pytest.raises(ValueError, match="http"):
        SlackConfig(name="slack", webhook_url=f"hooks.slack.com/services/{TOKEN}")


async def test_secrets_never_shown(server: SlackServer, caplog: pytest.LogCaptureFixture) -> None:
    config = SlackConfig(name="slack", webhook_url=server.url, timeout_s=2)
    made = SlackSink(config)
    caplog.set_level(logging.DEBUG)
    try:
        outcomes = [await send_one(made, message())]
        server.fail_next(1, status=404)
        outcomes.append(await send_one(made, message()))
    finally:
        await made.aclose()
    shown = " ".join(
        [made.describe(), repr(made), repr(config), config.model_dump_json(), *map(str, outcomes)]
    )
    own_logs = " ".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert TOKEN not in shown
    assert TOKEN not in own_logs
    assert made.describe() == f"slack → {server.base_url}/*** (app webhook)"


async def test_httpx_request_log_does_not_carry_the_webhook_token(
    server: SlackServer, sink: SlackSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await send_one(sink, message())
    assert TOKEN not in caplog.text

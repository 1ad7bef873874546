"""The PagerDuty sink against a local Events API v2 server that keeps alerts by dedup key."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pydantic
import pytest
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.testing.sinks.pagerduty import PagerDutyServer
from qcdr_response.outputs.base import Outcome, Status
from qcdr_response.outputs.http import redact_url
from qcdr_response.outputs.message import MessageKind, OutputMessage
from qcdr_response.outputs.registry import SINKS
from qcdr_response.outputs.sinks.pagerduty import DEFAULT_URL, PagerDutyConfig, PagerDutySink

from tests.response.outputs.sinks.messages import delivery
from tests.response.service.conftest import T0, make_finding

KEY = "R0UTINGKEY0123456789abcdefABCDEF"
assert len(KEY) == 32


def message(n: int = 1, **overrides: Any) -> OutputMessage:
    overrides.setdefault("group_key", "Network_Scanning_Utility|payments")  # one incident per test
    return delivery("pagerduty", n, explanation="nmap scanned the subnet", **overrides)


@pytest.fixture
def server() -> Iterator[PagerDutyServer]:
    pagerduty = PagerDutyServer()
    with pagerduty.serve():
        yield pagerduty


@pytest.fixture
async def sink(server: PagerDutyServer) -> AsyncIterator[PagerDutySink]:
    made = PagerDutySink(PagerDutyConfig(name="pd", routing_key=KEY, url=server.url, timeout_s=2))
    yield made
    await made.aclose()


async def send_one(sink: PagerDutySink, msg: OutputMessage) -> Outcome:
    [outcome] = await sink.send([msg])
    return outcome


def test_registered_with_the_seed_defaults() -> None:
    assert SINKS.get("pagerduty") is PagerDutySink
    config = PagerDutyConfig(name="pd", routing_key=KEY)
    assert config.min_severity is Severity.HIGH  # the seed paged for critical and high only
    assert config.url == DEFAULT_URL == "https://events.pagerduty.com/v2/enqueue"
    assert (config.rate_per_s, config.concurrency, config.batch_size) == (2.0, 1, 1)


async def test_trigger_event(server: PagerDutyServer, sink: PagerDutySink) -> None:
    msg = message(link="https://qcdr.example/findings/1", count=2)
    outcome = await send_one(sink, msg)
    assert outcome.status is Status.DELIVERED
    assert outcome.detail == "202 dedup_key=Network_Scanning_Utility|payments"
    [got] = server.received
    event = got.body
    assert got.headers["content-type"] == "application/json"
    assert (event["routing_key"], event["event_action"], event["dedup_key"]) == (
        KEY,
        "trigger",
        "Network_Scanning_Utility|payments",
    )
    payload = event["payload"]
    assert payload["summary"] == "[HIGH] nmap run in a container (x2) on prod-eu/payments/api-7d9f-x2"
    assert payload["source"] == "prod-eu/payments/api-7d9f-x2"
    assert payload["severity"] == "error"
    assert payload["timestamp"] == (T0 + timedelta(seconds=30)).isoformat()
    assert (payload["component"], payload["group"], payload["class"]) == (
        "api",
        "payments",
        "Network_Scanning_Utility",
    )
    details = payload["custom_details"]
    assert details["delivery_id"] == msg.id
    assert details["finding_id"] == msg.finding.id
    assert details["techniques"] == ["T1046"]
    assert details["explanation"] == "nmap scanned the subnet"
    assert details["process"] == {"name": "nmap", "path": "/usr/bin/nmap"}
    assert event["links"] == [{"href": "https://qcdr.example/findings/1", "text": "Open in qcdr"}]
    assert event["client"] == "qcdr"
    assert server.incidents[msg.group_key][0].status == "triggered"


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info"), ("info", "info")],
)
async def test_severity_mapping(
    server: PagerDutyServer, sink: PagerDutySink, severity: str, expected: str
) -> None:
    assert (await send_one(sink, message(finding=make_finding(severity=severity)))).status is Status.DELIVERED
    assert server.received[0].body["payload"]["severity"] == expected


async def test_a_group_and_its_updates_are_one_alert_until_resolved(
    server: PagerDutyServer, sink: PagerDutySink
) -> None:
    outcomes = [
        await send_one(sink, message(1)),
        await send_one(sink, message(2, kind=MessageKind.UPDATE, count=5)),
        await send_one(sink, message(3, kind=MessageKind.RESOLVE)),
    ]
    assert [o.status for o in outcomes] == [Status.DELIVERED] * 3
    assert server.unique_keys == {"Network_Scanning_Utility|payments"}
    [alert] = server.incidents["Network_Scanning_Utility|payments"]
    assert alert.status == "resolved"
    assert [e["event_action"] for e in alert.events] == ["trigger", "trigger", "resolve"]
    assert alert.summary.startswith("[HIGH] nmap run in a container (x5)")
    resolve = server.received[2].body
    assert set(resolve) == {"routing_key", "dedup_key", "event_action"}
    assert [r.meta["effect"] for r in server.received] == ["opened", "appended", "resolved"]
    await send_one(sink, message(4))  # the same group after a resolve: a new alert
    assert [a.status for a in server.incidents["Network_Scanning_Utility|payments"]] == [
        "resolved",
        "triggered",
    ]


async def test_long_values_fit_pagerduty_limits(server: PagerDutyServer, sink: PagerDutySink) -> None:
    finding = make_finding(title="x" * 2000, explanation="e" * 10_000, attributes={"blob": "b" * 100_000})
    group_key = "g" * 400
    assert (await send_one(sink, message(finding=finding, group_key=group_key))).status is Status.DELIVERED
    assert (
        await send_one(sink, message(finding=finding, group_key=group_key, kind=MessageKind.RESOLVE))
    ).status is (Status.DELIVERED)
    trigger, resolve = (r.body for r in server.received)
    assert len(trigger["payload"]["summary"]) == 1024
    assert len(trigger["dedup_key"]) <= 255
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert "attributes" not in trigger["payload"]["custom_details"]  # too big to carry
    assert server.incidents[trigger["dedup_key"]][0].status == "resolved"


async def test_an_unknown_routing_key_is_rejected() -> None:
    pagerduty = PagerDutyServer(routing_keys=["A" * 32])
    with pagerduty.serve() as url:
        made = PagerDutySink(PagerDutyConfig(name="pd", routing_key=KEY, url=url))
        try:
            outcome = await send_one(made, message())
        finally:
            await made.aclose()
    assert outcome.status is Status.REJECTED
    assert "invalid event" in outcome.detail
    assert KEY not in outcome.detail


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"routing_key": "short"}, "Length of 'routing_key' is incorrect"),
        ({"event_action": "page"}, "'event_action' is invalid"),
        ({"payload": {"source": "s", "severity": "error"}}, "'payload.summary' is missing"),
        ({"payload": {"summary": "s", "source": "s", "severity": "high"}}, "'payload.severity' is invalid"),
        ({"payload": {"summary": "s" * 1025, "source": "s", "severity": "info"}}, "at most 1024"),
        ({"event_action": "resolve", "dedup_key": None}, "'dedup_key' is required"),
    ],
)
async def test_server_refuses_invalid_events(
    server: PagerDutyServer, change: dict[str, Any], error: str
) -> None:
    event = {
        "routing_key": KEY,
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "s", "severity": "info"},
    }
    event.update(change)
    async with httpx.AsyncClient() as client:
        response = await client.post(server.url, json={k: v for k, v in event.items() if v is not None})
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "invalid event"
    assert any(error in e for e in body["errors"])


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (400, None, Status.REJECTED),
        (429, 60, Status.RETRY),
        (500, None, Status.RETRY),
        (502, None, Status.RETRY),
    ],
)
async def test_answers_become_outcomes(
    server: PagerDutyServer, sink: PagerDutySink, status: int, retry_after: int | None, expected: Status
) -> None:
    server.fail_next(1, status=status, retry_after=retry_after)
    outcome = await send_one(sink, message())
    assert outcome.status is expected
    assert outcome.retry_after_s == (float(retry_after) if retry_after else None)
    assert server.received == []
    assert KEY not in outcome.detail


async def test_timeout_is_unknown_and_the_retry_dedups(server: PagerDutyServer) -> None:
    made = PagerDutySink(PagerDutyConfig(name="pd", routing_key=KEY, url=server.url, timeout_s=0.3))
    server.hang_next(1, seconds=1.0)
    try:
        first = await send_one(made, message())
        second = await send_one(made, message())
    finally:
        await made.aclose()
    assert (first.status, second.status) == (Status.UNKNOWN, Status.DELIVERED)
    assert server.unique_keys == {"Network_Scanning_Utility|payments"}
    assert len(server.incidents["Network_Scanning_Utility|payments"]) == 1  # PagerDuty merged the retry


async def test_connection_refused_is_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    made = PagerDutySink(
        PagerDutyConfig(name="pd", routing_key=KEY, url=f"http://127.0.0.1:{port}/v2/enqueue")
    )
    try:
        outcome = await send_one(made, message())
    finally:
        await made.aclose()
    assert outcome.status is Status.RETRY


def test_config_refuses_a_malformed_key_without_echoing_it() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        PagerDutyConfig(name="pd", routing_key="secret-but-31-characters-long!!")
    assert "32 characters" in str(caught.value)
    assert "secret-but" not in str(caught.value)
    with pytest.raises(pydantic.ValidationError):
        PagerDutyConfig.model_validate({"name": "pd", "routing_key": KEY, "service_key": KEY})


async def test_routing_key_never_shown(
    server: PagerDutyServer, sink: PagerDutySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = await send_one(sink, message())
    shown = " ".join(
        [sink.describe(), repr(sink), repr(sink.config), sink.config.model_dump_json(), str(outcome)]
    )
    assert KEY not in shown
    assert KEY not in caplog.text  # the key travels in the body, never in a URL
    assert sink.describe() == f"pagerduty → {redact_url(server.url)} (routing key ***, min severity high)"

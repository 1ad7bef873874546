import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from qcdr_ingest.qualys.retry import (
    RetryNotice,
    RetryPolicy,
    is_retryable_status,
    retry_after_seconds,
    send_with_retries,
)

POLICY = RetryPolicy(max_retries=3, backoff_base_s=1.0, backoff_max_s=3.0, retry_after_max_s=60.0)


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.notices: list[RetryNotice] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def scripted(*answers: httpx.Response | Exception) -> tuple[Callable[[], object], list[int]]:
    calls: list[int] = []
    request = httpx.Request("GET", "http://x/")

    async def send() -> httpx.Response:
        answer = answers[min(len(calls), len(answers) - 1)]
        calls.append(1)
        if isinstance(answer, Exception):
            raise answer
        answer.request = request
        return answer

    return send, calls


async def run(send: Callable[[], object], recorder: Recorder, policy: RetryPolicy = POLICY) -> httpx.Response:
    return await send_with_retries(
        send,  # type: ignore[arg-type]
        policy,
        rng=random.Random(1),
        sleep=recorder.sleep,
        on_retry=recorder.notices.append,
    )


def test_retry_after_parsing() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (501, False),
        (400, False),
        (404, False),
    ],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


async def test_429_honours_retry_after_seconds() -> None:
    recorder = Recorder()
    send, _calls = scripted(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200))
    response = await run(send, recorder)
    assert response.status_code == 200
    assert recorder.sleeps == [7.0]
    assert recorder.notices == [RetryNotice(attempt=1, delay_s=7.0, reason="HTTP 429")]


async def test_429_honours_an_http_date_and_the_cap() -> None:
    recorder = Recorder()
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    send, _ = scripted(httpx.Response(429, headers={"Retry-After": later}), httpx.Response(200))
    await run(send, recorder)
    assert recorder.sleeps == [60.0]  # an hour is capped at retry_after_max_s


async def test_5xx_uses_bounded_exponential_backoff_with_jitter() -> None:
    recorder = Recorder()
    send, calls = scripted(httpx.Response(500), httpx.Response(503), httpx.Response(502), httpx.Response(200))
    assert (await run(send, recorder)).status_code == 200
    assert len(calls) == 4
    ceilings = [1.0, 2.0, 3.0]  # base * 2^n, capped at backoff_max_s
    for slept, ceiling in zip(recorder.sleeps, ceilings, strict=True):
        assert ceiling / 2 <= slept <= ceiling


async def test_budget_exhausted_returns_the_last_response() -> None:
    recorder = Recorder()
    send, calls = scripted(httpx.Response(503))
    response = await run(send, recorder)
    assert response.status_code == 503
    assert len(calls) == POLICY.max_retries + 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 501])
async def test_client_errors_are_not_retried(status: int) -> None:
    recorder = Recorder()
    send, calls = scripted(httpx.Response(status))
    assert (await run(send, recorder)).status_code == status
    assert len(calls) == 1
    assert recorder.sleeps == []


async def test_timeouts_and_resets_are_retried_then_raised() -> None:
    recorder = Recorder()
    send, calls = scripted(
        httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset"), httpx.ConnectTimeout("x")
    )
    with pytest.raises(httpx.ConnectTimeout):
        await run(send, recorder, RetryPolicy(max_retries=2, backoff_base_s=0.0))
    assert len(calls) == 3
    assert [n.reason for n in recorder.notices] == ["ReadTimeout", "RemoteProtocolError"]


async def test_refused_connections_are_retried() -> None:
    recorder = Recorder()
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    send, calls = scripted(refused, httpx.Response(200))
    assert (await run(send, recorder)).status_code == 200
    assert len(calls) == 2

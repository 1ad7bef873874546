"""Bounded retries with exponential backoff and jitter, honouring ``Retry-After``.

Retried: timeouts, refused/reset connections, 429 and transient 5xx. Not retried: DNS and TLS
failures (they do not heal in seconds) and every other 4xx. When the budget is spent on a status,
the last response is returned so the caller can report it; on an exception, it is re-raised.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, retry_if_result, stop_after_attempt
from tenacity.wait import wait_base

from qcdr_ingest.qualys.errors import is_permanent_transport_error

# 501 (not implemented) and 505 (HTTP version) will answer the same way next time.
_NON_TRANSIENT_5XX = frozenset({501, 505})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """Passed to ``on_retry`` before each wait."""

    attempt: int
    delay_s: float
    reason: str


def is_retryable_status(status_code: int) -> bool:
    return status_code == 429 or (500 <= status_code <= 599 and status_code not in _NON_TRANSIENT_5XX)


def is_retryable_exception(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TimeoutException | httpx.RemoteProtocolError):
        return True
    return isinstance(exc, httpx.NetworkError) and not is_permanent_transport_error(exc)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Backoff(wait_base):
    """Retry-After when the server sent one (capped), else equal-jitter exponential backoff."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            response = outcome.result()
            if isinstance(response, httpx.Response):
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                if hinted is not None:
                    return min(hinted, self._policy.retry_after_max_s)
        ceiling = min(
            self._policy.backoff_max_s, self._policy.backoff_base_s * 2.0 ** (retry_state.attempt_number - 1)
        )
        # Half fixed, half random: bounded below so retries never hammer, spread so clients desync.
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)


def _reason(state: RetryCallState) -> str:
    outcome = state.outcome
    if outcome is None:
        return "unknown"
    if outcome.failed:
        return type(outcome.exception()).__name__
    response = outcome.result()
    return f"HTTP {response.status_code}" if isinstance(response, httpx.Response) else "result"


def _give_up(state: RetryCallState) -> httpx.Response:
    # Re-raises the last exception, or hands back the last (still failing) response.
    assert state.outcome is not None
    response: httpx.Response = state.outcome.result()
    return response


async def send_with_retries(
    send: Callable[[], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[RetryNotice], None] | None = None,
) -> httpx.Response:
    """Call ``send`` until it succeeds, fails for good, or the retry budget is spent."""

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            on_retry(RetryNotice(attempt=state.attempt_number, delay_s=delay, reason=_reason(state)))

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=_Backoff(policy, rng or random.Random()),
        retry=(
            retry_if_exception(is_retryable_exception)
            | retry_if_result(lambda r: isinstance(r, httpx.Response) and is_retryable_status(r.status_code))
        ),
        before_sleep=before_sleep,
        retry_error_callback=_give_up,
        sleep=sleep,
    )
    response: httpx.Response = await retrying(send)
    return response

"""Running stream workers (consumers, outbox relays, the lag exporter) until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from qcdr_common.logging import get_logger

log = get_logger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]


async def wait_any(*events: asyncio.Event | None, seconds: float) -> None:
    """Return when one of ``events`` is set (``None`` ones are left out) or after ``seconds``,
    whichever comes first: the sleep of every loop that can also be woken or stopped."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events if e is not None]
    if not waiters:
        await asyncio.sleep(max(0.0, seconds))
        return
    try:
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: workers finish and ack their batch, then return. A second
    signal gets the default behaviour (exit now; unacked entries are redelivered later).

    Call it from inside the running event loop (e.g. first thing in the ``consume`` coroutine).
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():  # a second signal: the operator does not want to wait for the batch
        asyncio.get_running_loop().remove_signal_handler(sig)
        signal.raise_signal(sig)
        return
    log.info("stopping on signal", signal=sig.name)
    stop.set()


async def run_until_stopped(
    *workers: Worker, stop: asyncio.Event | None = None, signals: bool = True
) -> None:
    """Run every ``worker(stop)`` concurrently until ``stop`` is set (by a signal, or by the caller).

    If one worker raises, ``stop`` is set so the others wind down cleanly, and the error propagates.
    """
    stop = stop or asyncio.Event()
    if signals:
        install_signal_handlers(stop)

    async def guarded(worker: Worker) -> None:
        try:
            await worker(stop)
        except BaseException:
            stop.set()
            raise

    try:
        async with asyncio.TaskGroup() as tg:
            for worker in workers:
                tg.create_task(guarded(worker))
    finally:
        if signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


# SIGTERM: a worker finishes and acks its batch; Kubernetes' default grace period is 30 s.
BACKGROUND_STOP_TIMEOUT_S = 25.0


@asynccontextmanager
async def in_background(
    name: str,
    worker: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    stop_timeout_s: float = BACKGROUND_STOP_TIMEOUT_S,
) -> AsyncIterator[asyncio.Event]:
    """Run ``worker(stop)`` beside an app (consumer and relay loops in ``serve``) for the block's length.

    The loops survive Redis/PostgreSQL outages themselves, so a worker that ends while the app
    runs is a bug worth an error line. On exit ``stop`` is set and the worker gets
    ``stop_timeout_s`` to finish its batch before it is cancelled.
    """
    stop = asyncio.Event()
    task: asyncio.Task[None] = asyncio.create_task(worker(stop), name=name)

    def done(t: asyncio.Task[None]) -> None:
        if not stop.is_set() and not t.cancelled():
            log.error(
                "a background worker stopped while the app runs", worker=name, error=repr(t.exception())
            )

    task.add_done_callback(done)
    try:
        yield stop
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, stop_timeout_s)
        except Exception:
            log.exception("a background worker did not stop cleanly", worker=name)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

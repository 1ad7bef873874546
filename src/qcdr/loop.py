"""Once mode and the controller loop around ``run_cycle``, with progress, signals and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import timedelta
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from qcdr import metrics
from qcdr.apply_step import ApplyError
from qcdr.intel_step import IntelError
from qcdr.pipeline import RunOptions, RunReport, run_cycle
from qcdr.report import print_report
from qcdr.sources import FindingsSource, SourceError
from qcdr.state import StateError

EXIT_OK = 0
EXIT_FAILURE = 1
# After a failed cycle the controller retries sooner than the interval, but not in a tight loop.
RETRY_AFTER_FAILURE = timedelta(seconds=30)


class _Stop:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not available off the main thread (CliRunner in tests) or on some platforms.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.event.set)

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on a stop request; True when asked to stop."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


async def _one(
    options: RunOptions, source: FindingsSource, *, json_out: bool, applier: Any, err: Console
) -> RunReport:
    show_progress = not json_out and err.is_terminal
    if not show_progress:
        report = await run_cycle(options, source)
    else:
        with Progress(
            TextColumn("Fetching findings"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("fetch", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            report = await run_cycle(options, source, progress=progress)
    if applier is not None:
        report.apply = await applier.apply(report)
    return report


async def run_loop(
    options: RunOptions,
    source: FindingsSource,
    *,
    once: bool,
    every: timedelta,
    json_out: bool,
    applier: Any,
    console: Console,
    err: Console,
) -> int:
    stop = _Stop()
    stop.install()
    while True:
        code = EXIT_OK
        started = time.perf_counter()
        try:
            report = await _one(options, source, json_out=json_out, applier=applier, err=err)
        except (SourceError, ApplyError, IntelError, StateError, OSError) as exc:
            err.print(f"qcdr: error: {exc}", highlight=False)
            code = EXIT_FAILURE
            report = None
        metrics.record(report, time.perf_counter() - started)
        if report is not None:
            if json_out:
                console.file.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
                console.file.flush()
            else:
                print_report(report, console, hours=options.hours, output=options.output)
            if report.apply is not None and report.apply.get("failed"):
                code = EXIT_FAILURE
            if report.intel is not None and report.intel.unavailable:
                failed = ", ".join(report.intel.unavailable)
                err.print(
                    f"qcdr: error: threat intel: no feed could be read and none is cached ({failed}); "
                    "no blocklist was written",
                    highlight=False,
                )
                code = EXIT_FAILURE
        if once:
            return code
        wait = every if code == EXIT_OK else min(every, RETRY_AFTER_FAILURE)
        if await stop.sleep(wait.total_seconds()):
            return EXIT_OK

"""Benchmark: outputs (issue #8) — delivery throughput per sink to local servers, and the overhead
per finding of queueing in the findings transaction.

1. Throughput per sink: N pending queue rows (one finding per message: ``group_by: [finding]``)
   delivered by ``SinkDelivery.run`` with the sink's default ``batch_size`` and ``concurrency``
   and ``rate_per_s: null``, timed until the last outcome is recorded. Slack and PagerDuty limit
   their rate by default (1/s and 2/s): a short run with their defaults is reported beside.
2. Overhead per finding: ``grouping.enqueue`` in committed transactions of 500 findings, with 1
   and with 7 sinks; each finding a new group, or every finding folded into its group's pending row.

The HTTP sinks post to the local protocol servers of ``qcdr_common.testing.sinks`` (uvicorn with
uvloop + httptools), each in a child process of its own, so a server never shares the delivery
worker's GIL; syslog goes over TCP to a real rsyslogd (a plain asyncio TCP reader when rsyslogd is
missing). PostgreSQL: a scratch database on ``DATABASE_URL`` (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test), migrated, dropped afterwards.

    uv run python bench/outputs.py [--json] [--write-doc docs/PERFORMANCE.md]
    uv run python bench/outputs.py --profile pagerduty   # cProfile of one sink's delivery (or: enqueue)
    uv run python bench/outputs.py --async-commit        # the same with synchronous_commit=off
"""

# ruff: noqa: E501  (the markdown table rows are written as they appear in the document)

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import multiprocessing
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.sinks.elasticsearch import serve_elasticsearch
from qcdr_common.testing.sinks.pagerduty import PagerDutyServer
from qcdr_common.testing.sinks.rsyslog import RsyslogUnavailableError, run_rsyslog
from qcdr_common.testing.sinks.slack import SlackServer
from qcdr_common.testing.sinks.splunk_hec import serve_splunk_hec
from qcdr_common.testing.sinks.teams import TeamsServer
from qcdr_common.testing.sinks.webhook import HttpSinkServer, WebhookServer
from qcdr_response.db import upgrade
from qcdr_response.outputs import grouping
from qcdr_response.outputs.base import Outcome, SinkConfig, Status
from qcdr_response.outputs.config import parse_entries
from qcdr_response.outputs.delivery import SinkDelivery
from qcdr_response.outputs.models import OutputQueueRow
from qcdr_response.outputs.runtime import make_sink
from sqlalchemy import Engine, event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

BASE = os.environ.get("DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SINKS = ("slack", "pagerduty", "teams", "webhook", "splunk_hec", "elasticsearch", "syslog")
BATCHED = frozenset({"splunk_hec", "elasticsearch", "syslog"})
HTTP_SERVERS: dict[str, Callable[[], HttpSinkServer]] = {
    "slack": lambda: SlackServer(record_bodies=False),
    "pagerduty": lambda: PagerDutyServer(record_bodies=False),
    "teams": lambda: TeamsServer(record_bodies=False),
    "webhook": lambda: WebhookServer(record_bodies=False),
}
HEC_TOKEN = "00000000-0000-4000-8000-000000000001"
ROUTING_KEY = "R" * 32
LIMITED = {"slack": 6, "pagerduty": 11}  # messages for the "as configured" runs (about 5 s each)
ENQUEUE_BATCH = 500
_run = uuid.uuid4().hex[:6]
_ids = itertools.count(1)


def make_finding() -> Finding:
    """A Falco-like nmap-in-a-container finding (the idea of the tests' ``make_finding``)."""
    n = next(_ids)
    data: dict[str, Any] = {
        "id": f"bench-{_run}-{n:07d}",
        "kind": "source",
        "detector": "falco",
        "category": "Network_Scanning_Utility",
        "severity": "high",
        "techniques": ["T1046"],
        "title": "nmap run in a container",
        "explanation": "nmap scanned 10.0.0.0/24 from the api container",
        "event_time": datetime.now(UTC),
        "evidence_event_ids": [f"event-{n}"],
        "workload": {"cluster": "prod-eu", "namespace": "payments", "pod": "api-7d9f-x2", "container": "api"},
        "process": {"name": "nmap", "path": "/usr/bin/nmap"},
        "network": {"ip": "10.0.0.7", "port": 443},
        "source": "falco",
    }
    return Finding.model_validate(data)


# ---------------------------------------------------------------------------- local servers


def _serve_http(kind: str, conn: Connection) -> None:
    """Child process: one protocol server until told to stop; answers "count" with the number of
    distinct delivery keys it accepted."""
    with contextlib.ExitStack() as stack:
        counter: Callable[[], int]
        if kind == "splunk_hec":
            hec = stack.enter_context(serve_splunk_hec(HEC_TOKEN, fast=True))
            target, counter = hec.url, lambda: len(hec.unique_keys)
        elif kind == "elasticsearch":
            es = stack.enter_context(serve_elasticsearch(fast=True))
            target, counter = es.url, lambda: len(es.unique_keys)
        else:
            server = HTTP_SERVERS[kind]()
            target = stack.enter_context(server.serve(fast=True))
            counter = lambda: len(server.unique_keys)  # noqa: E731
        conn.send(target)
        while conn.recv() != "stop":
            conn.send(counter())


def _serve_tcp(conn: Connection) -> None:
    """Child process: a plain syslog/TCP reader (RFC 6587 octet counting) that counts frames."""

    async def serve() -> None:
        frames = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal frames
            buf = bytearray()
            while data := await reader.read(1 << 16):
                buf += data
                while (space := buf.find(b" ")) > 0 and len(buf) >= space + 1 + int(buf[:space]):
                    del buf[: space + 1 + int(buf[:space])]
                    frames += 1
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, conn.recv) != "stop":
            conn.send(frames)
        server.close()

    asyncio.run(serve())


@dataclass
class Target:
    """Where a sink delivers, and how many distinct messages arrived there."""

    kind: str
    entry: dict[str, Any]  # the outputs entry (without the common settings)
    received: Callable[[], int]
    server: str  # what received, for the document


@contextlib.contextmanager
def targets(tmp: Path) -> Iterator[dict[str, Target]]:
    """Start every local server (before any event loop or thread: children are forked)."""
    ctx = multiprocessing.get_context("fork")
    children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []

    def child(fn: Callable[..., None], *args: Any) -> tuple[Any, Callable[[], int]]:
        parent, theirs = ctx.Pipe()
        proc = ctx.Process(target=fn, args=(*args, theirs), daemon=True)
        proc.start()
        children.append((proc, parent))
        if not parent.poll(30):
            raise RuntimeError(f"{fn.__name__}{args} did not start")

        def count() -> int:
            parent.send("count")
            return int(parent.recv())

        return parent.recv(), count

    found: dict[str, Target] = {}
    with contextlib.ExitStack() as stack:
        try:
            for kind in SINKS:
                if kind == "syslog":
                    continue
                url, count = child(_serve_http, kind)
                entry: dict[str, Any] = {
                    "slack": {"webhook_url": url},
                    "pagerduty": {"routing_key": ROUTING_KEY, "url": url},
                    "teams": {"webhook_url": url},
                    "webhook": {"url": url},
                    "splunk_hec": {"url": url, "token": HEC_TOKEN},
                    "elasticsearch": {"url": url},
                }[kind]
                found[kind] = Target(kind, entry, count, f"`{kind}` protocol server (uvicorn, child process)")
            try:
                rsyslog = stack.enter_context(run_rsyslog(tmp))
                entry = {"host": "127.0.0.1", "port": rsyslog.tcp_port, "protocol": "tcp"}
                found["syslog"] = Target(
                    "syslog",
                    entry,
                    lambda: len(rsyslog.lines()),
                    "a real rsyslogd (imtcp, written to a file by omfile)",
                )
            except RsyslogUnavailableError:
                port, count = child(_serve_tcp)
                entry = {"host": "127.0.0.1", "port": port, "protocol": "tcp"}
                found["syslog"] = Target(
                    "syslog", entry, count, "a plain asyncio TCP reader in a child process (no rsyslogd here)"
                )
            yield found
        finally:
            for proc, conn in children:
                with contextlib.suppress(OSError):
                    conn.send("stop")
                proc.join(10)
                if proc.is_alive():
                    proc.terminate()


def kind_of(config: SinkConfig) -> str:
    return str(getattr(config, "type", ""))


def configs(found: dict[str, Target], *, limited: bool = False, **common: Any) -> dict[str, SinkConfig]:
    """One validated config per sink. ``limited``: the sink's own rate limit (else ``rate_per_s: null``)."""
    entries = []
    for kind, target in found.items():
        entry: dict[str, Any] = {"type": kind, **target.entry, **common}
        if not limited:
            entry["rate_per_s"] = None
        entries.append(entry)
    return {kind_of(c): c for c in parse_entries(entries, {})}


# ---------------------------------------------------------------------------- 1. throughput


class TimedDelivery(SinkDelivery):
    """``SinkDelivery`` that says when ``target`` outcomes have been recorded (committed), and adds
    up the wall time of its three phases: the claim transaction, the send (validating the
    messages from their payload, rendering, the request) and the outcome transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivered = self.other = self.target = self.batches = 0
        self.claim_s = self.deliver_s = self.record_s = 0.0
        self.done = asyncio.Event()

    async def claim(self, limit: int) -> list[OutputQueueRow]:
        start = time.perf_counter()
        rows = await super().claim(limit)
        self.claim_s += time.perf_counter() - start
        self.batches += bool(rows)
        return rows

    async def deliver(self, rows: Sequence[OutputQueueRow]) -> None:
        start = time.perf_counter()
        await super().deliver(rows)
        self.deliver_s += time.perf_counter() - start

    async def record(
        self, rows: Sequence[OutputQueueRow], outcomes: Sequence[Outcome], expired: Sequence[OutputQueueRow]
    ) -> None:
        start = time.perf_counter()
        await super().record(rows, outcomes, expired)
        self.record_s += time.perf_counter() - start
        ok = sum(1 for o in outcomes if o.status is Status.DELIVERED)
        self.delivered += ok
        self.other += len(rows) - ok + len(expired)
        if self.delivered >= self.target:
            self.done.set()

    def phases_ms(self) -> dict[str, float]:
        """Mean wall time per batch of each phase (concurrent batches overlap)."""
        n = max(1, self.batches)
        return {
            "claim": self.claim_s / n * 1e3,
            "send": (self.deliver_s - self.record_s) / n * 1e3,
            "record": self.record_s / n * 1e3,
        }

    async def drain(self, n: int, timeout_s: float = 300) -> float:
        """Run until ``n`` messages are recorded delivered; seconds from start to the last commit."""
        self.delivered = self.other = self.batches = 0
        self.claim_s = self.deliver_s = self.record_s = 0.0
        self.target = n
        self.done.clear()
        stop = asyncio.Event()
        start = time.perf_counter()
        task = asyncio.create_task(self.run(stop))
        try:
            await asyncio.wait_for(self.done.wait(), timeout_s)
            return time.perf_counter() - start
        finally:
            stop.set()
            self.notify()
            await task


async def fill(
    sessions: async_sessionmaker[AsyncSession], config: SinkConfig, findings: Sequence[Finding]
) -> None:
    """Pending rows, one per finding, as ``grouping.enqueue`` makes them (bulk insert: faster)."""
    now = datetime.now(UTC)
    rows = []
    for f in findings:
        gk = grouping.group_key(f, config.group_by)
        message = grouping.new_message(config, f, gk, cluster_id="bench", now=now, link=None)
        row = grouping.queue_row(message, now)
        rows.append(
            {
                c: getattr(row, c)
                for c in (
                    "message_id",
                    "sink",
                    "kind",
                    "group_key",
                    "count",
                    "state",
                    "payload",
                    "created_at",
                    "next_attempt_at",
                )
            }
        )
    async with sessions.begin() as session:
        for i in range(0, len(rows), 2000):
            await session.execute(insert(OutputQueueRow), rows[i : i + 2000])


async def truncate(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        await session.execute(
            text("TRUNCATE response_output_queue, response_output_dead_letters RESTART IDENTITY")
        )


async def throughput(
    sessions: async_sessionmaker[AsyncSession],
    config: SinkConfig,
    target: Target,
    n: int,
    *,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    warm = max(config.batch_size * config.concurrency * 2, 20)
    findings = [make_finding() for _ in range(warm + n)]
    await truncate(sessions)
    before = target.received()
    sink = make_sink(config)
    delivery = TimedDelivery(sink, sessions, poll_s=0.05)
    try:
        await fill(sessions, config, findings[:warm])
        await delivery.drain(warm)  # connections open, code paths warm
        await fill(sessions, config, findings[warm:])
        if profile is not None:
            profile.enable()
        elapsed = await delivery.drain(n)
        if profile is not None:
            profile.disable()
        not_delivered = delivery.other
        phases = delivery.phases_ms()
    finally:
        await sink.aclose()
    async with sessions.begin() as session:
        delivered = await session.scalar(
            select(func.count()).where(
                OutputQueueRow.sink == config.name, OutputQueueRow.state == "delivered"
            )
        )
    arrived = target.received() - before
    for _ in range(100):  # rsyslogd writes its file a moment later
        if arrived >= warm + n:
            break
        await asyncio.sleep(0.05)
        arrived = target.received() - before
    return {
        "sink": kind_of(config),
        "batch_size": config.batch_size,
        "concurrency": config.concurrency,
        "messages": n,
        "seconds": elapsed,
        "per_s": n / elapsed,
        "delivered_rows": int(delivered or 0),
        "expected_rows": warm + n,
        "arrived": arrived,
        "not_delivered_outcomes": not_delivered,
        "per_batch_ms": phases,
        "server": target.server,
    }


async def as_configured(
    sessions: async_sessionmaker[AsyncSession], config: SinkConfig, n: int
) -> dict[str, Any]:
    sink = make_sink(config)
    delivery = TimedDelivery(sink, sessions, poll_s=0.05)
    try:
        await fill(sessions, config, [make_finding() for _ in range(n)])
        elapsed = await delivery.drain(n)
    finally:
        await sink.aclose()
    return {"rate_per_s": config.rate_per_s, "messages": n, "seconds": elapsed, "per_s": n / elapsed}


# ---------------------------------------------------------------------------- 2. enqueue overhead


_statements = 0


def _count_statement(*_: Any) -> None:
    global _statements
    _statements += 1


async def enqueue_us(
    sessions: async_sessionmaker[AsyncSession], sinks: Sequence[SinkConfig], batches: int, *, grouped: bool
) -> dict[str, float]:
    """µs per finding for ``grouping.enqueue`` + commit, median over ``batches`` of 500; and the SQL
    statements (round trips) per finding and sink."""
    await truncate(sessions)
    per_batch = []
    event.listen(Engine, "before_cursor_execute", _count_statement)
    before = _statements
    for _ in range(batches):
        # grouped: the whole batch in one group per sink (the first finding of the run opens it)
        batch = [make_finding() for _ in range(ENQUEUE_BATCH)]
        start = time.perf_counter()
        async with sessions.begin() as session:
            await grouping.enqueue(session, sinks, batch, cluster_id="bench", now=datetime.now(UTC))
        per_batch.append(time.perf_counter() - start)
    statements = _statements - before
    event.remove(Engine, "before_cursor_execute", _count_statement)
    async with sessions.begin() as session:
        rows = int(await session.scalar(select(func.count()).select_from(OutputQueueRow)) or 0)
    expected = len(sinks) if grouped else len(sinks) * batches * ENQUEUE_BATCH
    if rows != expected:
        raise AssertionError(f"{rows} queue rows, expected {expected}")
    return {
        "us_per_finding": statistics.median(per_batch) / ENQUEUE_BATCH * 1e6,
        "rows": rows,
        "statements_per_finding_and_sink": statements / (batches * ENQUEUE_BATCH * len(sinks)),
    }


async def database_facts(url: str, n: int = 100) -> dict[str, Any]:
    """The server's durability settings and what one committed single-row insert costs."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        facts: dict[str, Any] = {
            s: await conn.fetchval(f"SHOW {s}") for s in ("fsync", "synchronous_commit", "server_version")
        }
        await conn.execute("CREATE TABLE bench_commit (x int)")
        start = time.perf_counter()
        for i in range(n):
            await conn.execute("INSERT INTO bench_commit VALUES ($1)", i)
        facts["commit_us"] = (time.perf_counter() - start) / n * 1e6
        await conn.execute("DROP TABLE bench_commit")
        return facts
    finally:
        await conn.close()


async def empty_transaction_us(sessions: async_sessionmaker[AsyncSession], n: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(n):
        async with sessions.begin() as session:
            await session.execute(text("SELECT 1"))
    return (time.perf_counter() - start) / n * 1e6


# ---------------------------------------------------------------------------- the run


async def _sql(url: str, query: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(query)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database(*, async_commit: bool = False) -> Iterator[str]:
    name = f"qcdr_bench_outputs_{uuid.uuid4().hex[:8]}"
    asyncio.run(_sql(BASE, f'CREATE DATABASE "{name}"'))
    try:
        url = BASE.rpartition("/")[0] + "/" + name
        if async_commit:  # for comparison only: commits stop waiting for the WAL flush
            asyncio.run(_sql(BASE, f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        upgrade(url)
        yield url
    finally:
        asyncio.run(_sql(BASE, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def measure(url: str, found: dict[str, Target], args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        figures: dict[str, Any] = {"database": await database_facts(url), "load_before": os.getloadavg()[0]}
        figures["throughput"] = {}
        open_rate = configs(found, group_by=["finding"])
        for kind in SINKS:
            n = args.batched_messages if kind in BATCHED else args.messages
            figures["throughput"][kind] = await throughput(sessions, open_rate[kind], found[kind], n)
            print(f"{kind}: {figures['throughput'][kind]['per_s']:,.0f} messages/s", file=sys.stderr)
        await truncate(sessions)
        limited = configs(found, limited=True, group_by=["finding"])
        results = await asyncio.gather(*(as_configured(sessions, limited[k], n) for k, n in LIMITED.items()))
        figures["as_configured"] = dict(zip(LIMITED, results, strict=True))
        figures["enqueue"] = await enqueue_figures(sessions, found, args.enqueue_batches)
        print(f"enqueue: {orjson.dumps(figures['enqueue']).decode()}", file=sys.stderr)
        figures["load_after"] = os.getloadavg()[0]
        return figures
    finally:
        await engine.dispose()


async def enqueue_figures(
    sessions: async_sessionmaker[AsyncSession], found: dict[str, Target], batches: int
) -> dict[str, Any]:
    new_groups = list(configs(found, group_by=["finding"]).values())
    one_group = list(configs(found, group_by=["category", "namespace"]).values())
    webhook = SINKS.index("webhook")
    seven = max(1, batches // 2)
    return {
        "1_new": await enqueue_us(sessions, new_groups[webhook : webhook + 1], batches, grouped=False),
        "7_new": await enqueue_us(sessions, new_groups, seven, grouped=False),
        "1_grouped": await enqueue_us(sessions, one_group[webhook : webhook + 1], batches, grouped=True),
        "7_grouped": await enqueue_us(sessions, one_group, seven, grouped=True),
        "empty_transaction_us": await empty_transaction_us(sessions),
    }


async def profile_one(url: str, found: dict[str, Target], what: str, args: argparse.Namespace) -> str:
    """cProfile of one sink's delivery run, or of ``enqueue`` (7 sinks, new groups)."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    profile = cProfile.Profile()
    try:
        if what == "enqueue":
            profile.enable()
            result = await enqueue_us(
                sessions, list(configs(found, group_by=["finding"]).values()), 1, grouped=False
            )
            profile.disable()
            headline = f"enqueue, 7 sinks: {result['us_per_finding']:,.0f} µs per finding under cProfile"
        else:
            n = args.batched_messages if what in BATCHED else args.messages
            config = configs({what: found[what]}, group_by=["finding"])[what]
            result = await throughput(sessions, config, found[what], n, profile=profile)
            headline = f"{what}: {result['per_s']:,.0f} messages/s under cProfile"
    finally:
        await engine.dispose()
    out = io.StringIO()
    out.write(headline + "\n")
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(50)
    return out.getvalue()


def render(f: dict[str, Any]) -> str:
    rows = []
    for kind, t in f["throughput"].items():
        lim = f["as_configured"].get(kind)
        conf = "no limit by default"
        if lim:
            burst = max(1.0, lim["rate_per_s"])  # the token bucket starts full
            conf = (
                f"`rate_per_s: {lim['rate_per_s']:g}`: ≈{(lim['messages'] - burst) / lim['seconds']:.1f}/s "
                f"({lim['messages']} in {lim['seconds']:.1f} s, {burst:g} from the initial burst)"
            )
        arrived = (
            "all"
            if t["arrived"] >= t["expected_rows"] and t["delivered_rows"] == t["expected_rows"]
            else f"**{t['arrived']:,} of {t['expected_rows']:,}**"
        )
        p = t["per_batch_ms"]
        rows.append(
            f"| {kind} | {t['batch_size']} / {t['concurrency']} | {t['messages']:,} | "
            f"**{t['per_s']:,.0f}** ({t['seconds']:.1f} s) | {p['claim']:.1f} / {p['send']:.1f} / "
            f"{p['record']:.1f} | {conf} | {arrived} |"
        )
    table = "\n".join(rows)
    e = f["enqueue"]
    db = f["database"]
    fold1 = e["1_grouped"]["us_per_finding"] / e["1_new"]["us_per_finding"]
    fold7 = e["7_grouped"]["us_per_finding"] / e["7_new"]["us_per_finding"]
    date = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    return f"""## Outputs: delivery per sink and queueing per finding (issue #8)

Machine: {f["machine"]}. Date: {date}. `bench/outputs.py`, {f["wall_s"]:.0f} s in all.

PostgreSQL {db["server_version"].split()[0]}: the machine's server, a scratch database, with
`fsync={db["fsync"]}` and `synchronous_commit={db["synchronous_commit"]}`; a committed one-row insert
took {db["commit_us"] / 1000:.2f} ms at the start of the run. Each HTTP sink posts to its local
protocol server from `qcdr_common.testing.sinks` (uvicorn + uvloop + httptools), each in a child
process of its own, so a server does not share the delivery worker's GIL. Syslog is RFC 5424 over
TCP with octet counting, received by {f["throughput"]["syslog"]["server"]}. All of it shares the
2 cores. The load average was {f["load_before"]:.1f} before the run and {f["load_after"]:.1f} after
(other work on the machine included): read the figures as orders of magnitude.

**Delivery throughput.** A queue of pending rows (`group_by: [finding]`: one finding per
message; bulk-inserted as `grouping.enqueue` makes them) drained by one `SinkDelivery.run` with
the sink's default `batch_size` and `concurrency` and `rate_per_s: null`, timed from the start of
the loop to the commit of the last outcome, after a warm-up of a few batches. "Per batch" is the
mean wall time of `SinkDelivery`'s three steps: the claim transaction; the send (validating the
messages from their JSONB payload, rendering, the request); the outcome transaction (`record`).
Concurrent batches overlap. "As configured": a short run with the sink's own defaults.

| sink | batch_size / concurrency | messages | messages/s, `rate_per_s: null` | per batch: claim / send / record, ms | as configured | arrived |
|---|---|---|---|---|---|---|
{table}

**Queueing in the findings transaction.** `grouping.enqueue` over batches of {ENQUEUE_BATCH} findings,
each batch one committed transaction (median of the batches), per finding. An empty transaction
costs {e["empty_transaction_us"]:,.0f} µs per batch, nothing per finding.

| findings transaction | 1 sink | 7 sinks (one of each type) |
|---|---|---|
| each finding a new group (a new queue row per sink) | {e["1_new"]["us_per_finding"]:,.0f} µs | {e["7_new"]["us_per_finding"]:,.0f} µs |
| same group: folded into the group's pending row | {e["1_grouped"]["us_per_finding"]:,.0f} µs | {e["7_grouped"]["us_per_finding"]:,.0f} µs |
| folded finding / new group | {fold1:.2f} | {fold7:.2f} |

{notes(f)}"""


def notes(f: dict[str, Any]) -> str:
    t = f["throughput"]
    batched = [k for k in t if k in BATCHED]
    shares = [t[k]["per_batch_ms"]["record"] / sum(t[k]["per_batch_ms"].values()) for k in batched]
    return f"""Where the time goes (the first run of this benchmark, before the batching below, measured
1,428 µs / 10,596 µs per finding for queueing and ~1,200 messages/s for the batched sinks):

- **Unbatched sinks** (Slack, PagerDuty, Teams, webhook: `batch_size` 1) pay two transactions per
  message, each ending in a commit (a WAL flush): the claim and the outcome. The claim is an
  `UPDATE … WHERE id IN (SELECT … ORDER BY next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED)
  RETURNING` served by the partial index `(sink, next_attempt_at)`. With `concurrency` 2 only the
  sends and outcome transactions overlap; PagerDuty (`concurrency` 1) is fully serial. A cProfile
  of PagerDuty (1,500 messages, 2026-12-04) showed a third of the time waiting in `epoll` for
  PostgreSQL and the server, 6% in socket sends, and the rest spread over SQLAlchemy's
  per-statement work (some 8,000 Python calls per message); Pydantic under 1%. No hot spot: round
  trips times the overhead per statement. Claiming several messages per claim for unbatched
  sinks (sent concurrently) is the next step if these rates matter; the sinks' own rate limits
  (Slack 1/s, PagerDuty 2/s) are far below them.
- **Batched sinks** claim, send and record once per batch: the delivered rows are marked in one
  `UPDATE … WHERE id IN (…)`; recording is now {min(shares):.0%}–{max(shares):.0%} of each batch's
  time.
- **Queueing** is batched: one statement takes the advisory locks of all the batch's groups (in
  a stable order, so concurrent batches cannot deadlock), one `SELECT DISTINCT ON (sink,
  group_key)` reads each group's newest row, findings are grouped in Python, and one multi-row
  `INSERT` writes the new messages (plus one conditional `UPDATE` per queued untried row a batch
  grows). A folded finding costs less than a new group because it writes nothing of its own.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000, help="per unbatched sink")
    parser.add_argument("--batched-messages", type=int, default=20_000, help="per batched sink")
    parser.add_argument("--enqueue-batches", type=int, default=4, help="batches of 500 (halved for 7 sinks)")
    parser.add_argument(
        "--profile",
        choices=[*SINKS, "enqueue"],
        help="cProfile one sink's delivery (or enqueue) and print it",
    )
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="synchronous_commit=off on the scratch database (comparison)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        targets(Path(tmp)) as found,
        scratch_database(async_commit=args.async_commit) as url,
    ):
        if args.profile:
            print(asyncio.run(profile_one(url, found, args.profile, args)))
            return
        figures = asyncio.run(measure(url, found, args))
    figures["machine"] = machine()
    figures["wall_s"] = time.perf_counter() - started
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() if args.json else render(figures))
    if args.write_doc:
        update_section(args.write_doc, "outputs", render(figures))


if __name__ == "__main__":
    main()

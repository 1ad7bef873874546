"""Benchmark: the service suite end to end — ``POST /v1/events/falco`` on ingest → Redis Streams →
analysis findings in PostgreSQL (issue #4).

1. Maximum sustained throughput: N events posted as fast as 4 client threads can, timed until the
   last finding is stored.
2. Latency at a fixed rate (default 5,000 events/s): each alert's ``time`` is the moment it was
   sent, so a finding's ``created_at − event_time`` is its event→finding latency (``created_at``
   is the inserting transaction's start, so a batch's own handling time is left out).

Runs ingest (serve) and analysis (consume) as processes against the machine's PostgreSQL and
Redis (``DATABASE_URL`` / ``REDIS_URL`` or the defaults), in a scratch database.

    uv run python bench/e2e.py --write-doc docs/PERFORMANCE.md
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doc import machine, update_section

from tests.integration.stack import Stack

BASE = os.environ.get("DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# analysis's correlation_idle_flush_s (5 s) plus the time to process what it flushes
SETTLE_S = 12.0


def alerts(start: int, n: int, rule: str = "Reverse shell connection") -> bytes:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        [
            {
                "hostname": "node-1",
                "output": f"Reverse shell (n={i})",
                "priority": "Critical",
                "rule": rule,
                "source": "syscall",
                "tags": ["container", "T1059.004"],
                "time": now,
                "output_fields": {
                    "k8s.ns.name": f"team-{i % 8}",
                    "k8s.pod.name": f"app-{i % 50}",
                    "proc.name": "nc",
                    "proc.exepath": "/usr/bin/nc",
                    "evt.num": i,
                },
            }
            for i in range(start, start + n)
        ]
    )


async def _sql(url: str, query: str) -> Any:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


def sql(url: str, query: str) -> Any:
    return asyncio.run(_sql(url, query))


def wait_findings(url: str, n: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sql(url, "SELECT count(*) FROM analysis_findings")[0][0] >= n:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {n} findings after {timeout}s")


def run(events: int, rates: list[int], seconds: int) -> dict[str, Any]:
    name = f"qcdr_bench_{uuid.uuid4().hex[:8]}"
    sql(BASE, f'CREATE DATABASE "{name}"')
    url = BASE.rpartition("/")[0] + "/" + name
    token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack.create(
            Path(tmp),
            database_url=url,
            redis_url=REDIS,
            prefix=f"bench-{name}",
            token=token,
            extra_env={
                "QCDR_POLLER_ENABLED": "false",
                "QCDR_EVENTS_RATE_PER_S": "10000000",
                "QCDR_EVENTS_RATE_BURST": "10000000",
            },
        )
        try:
            stack.migrate("ingest", "analysis")
            ingest = stack.serve("ingest")
            stack.consume("analysis", QCDR_CONSUMER_NAME="analysis-0")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            batch = 1000
            bodies = [alerts(i, batch) for i in range(0, events, batch)]
            with (
                httpx.Client(headers=headers, timeout=60) as client,
                concurrent.futures.ThreadPoolExecutor(4) as pool,
            ):
                t0 = time.monotonic()
                list(
                    pool.map(
                        lambda b: client.post(f"{ingest.url}/v1/events/falco", content=b).raise_for_status(),
                        bodies,
                    )
                )
                posted = time.monotonic()
                done = wait_findings(url, events)
            throughput = events / (done - t0)
            ingest_rate = events / (posted - t0)

            # Fixed rates: batches of rate/10 every 100 ms for `seconds`; the phase's rule name
            # tells its findings apart.
            phases = {}
            total = events
            for phase_rate in rates:
                # Let the previous phase's matches leave the correlation engine first: it holds every
                # event that matches a chain step for its allowed lateness (30 s of event time) and,
                # once the stream has been idle for 5 s, processes them all at once; without this
                # pause that backlog of tens of thousands of items landed in this phase's latency.
                time.sleep(SETTLE_S)
                rule = f"Reverse shell connection at {phase_rate}/s"
                per_tick = max(1, phase_rate // 10)
                sent = 0
                with httpx.Client(headers=headers, timeout=60) as client:
                    start = time.monotonic()
                    for tick in range(seconds * 10):
                        client.post(
                            f"{ingest.url}/v1/events/falco", content=alerts(total + sent, per_tick, rule)
                        ).raise_for_status()
                        sent += per_tick
                        delay = start + (tick + 1) / 10 - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    achieved = sent / (time.monotonic() - start)
                total += sent
                wait_findings(url, total)
                rows = sql(
                    url,
                    "SELECT extract(epoch FROM created_at - event_time) * 1000 AS ms "
                    f"FROM analysis_findings WHERE category = '{rule}'",
                )
                lat = sorted(float(r["ms"]) for r in rows)
                phases[phase_rate] = {
                    "achieved": achieved,
                    "samples": len(lat),
                    "p50_ms": statistics.median(lat),
                    "p99_ms": lat[int(len(lat) * 0.99) - 1],
                    "max_ms": lat[-1],
                }
        finally:
            stack.close()
            sql(BASE, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "events": events,
        "sustained_events_per_s": throughput,
        "ingest_accept_per_s": ingest_rate,
        "phases": phases,
        "machine": machine(),
    }


def section(f: dict[str, Any]) -> str:
    ok_rate = "met" if f["sustained_events_per_s"] >= 20_000 else "missed"
    date = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    rate = f"{f['sustained_events_per_s']:,.0f} events/s ({f['events']:,} events)"
    rows = []
    for phase_rate, p in sorted(f["phases"].items()):
        goal = f"p99 ≤ 250 ms: {'met' if p['p99_ms'] <= 250 else 'missed'}" if int(phase_rate) == 5000 else ""
        rows.append(
            f"| latency at {int(phase_rate):,}/s (achieved {p['achieved']:,.0f}/s) "
            f"| p50 {p['p50_ms']:,.0f} ms, p99 {p['p99_ms']:,.0f} ms, max {p['max_ms']:,.0f} ms "
            f"({p['samples']:,} events) | {goal} |"
        )
    table = "\n".join(rows)
    return f"""## Service suite end to end: events → findings (issue #4)

Machine: {f["machine"]}. Date: {date}. `bench/e2e.py`: ingest (`serve`) and analysis (`consume`, one
consumer) as processes with the machine's PostgreSQL and Redis; Falco alerts posted in batches of
1,000 by 4 client threads, all on the same 2 cores.

| measure | value | goal |
|---|---|---|
| sustained events → findings | {rate} | ≥ 20,000/s: {ok_rate} |
| ingest acceptance (POST → stored + outbox) | {f["ingest_accept_per_s"]:,.0f} events/s | |
{table}

{NOTES}"""


NOTES = """Both goals are missed. What limits it:

- **Everything shares 2 cores**: PostgreSQL, Redis, the ingest HTTP server and its outbox relay,
  the analysis consumer and the load generator. Ingest alone accepts ~14k events/s here; per
  event it spends ~40 µs in Python (decode, adapter, validation) and ~70–90 µs in PostgreSQL.
- **The analysis consumer is the limit**: one process (one replica consumes at a time: its state
  is in memory, README *Replicas*), ~300 µs of its own CPU per event on this load (every alert
  is a reverse shell, so every event is also a step of a chain pattern and is buffered, ordered
  and keyed by the correlation engine, the costliest case). It is busy about 70 % of the time;
  the rest it waits for PostgreSQL, which shares the cores. Sampled with py-spy during the
  sustained phase (2-core Intel Xeon, 2026-12-05, evening): storing findings and their outbox
  rows 15 % (building the envelopes 7 %, the COPY and the insert statement 5 %), the detectors
  14 %, the correlation
  checkpoint to Redis 13 %, the outbox relay 13 %, the correlation engine 10 %, decoding
  envelopes and events 5 %, recording received ids 1 %. Storing by COPY (instead of multi-row
  INSERTs through SQLAlchemy, 30 % before) and the faster envelope encoder freed analysis CPU
  without moving the sustained figure beyond the run-to-run noise: the cores are shared with
  ingest and PostgreSQL, which then take it.
  Since then both outbox relays (ingest's and analysis') spend a third of the CPU per row they
  did (`bench/outbox_relay.py`); the figures above were measured after that change, on a
  different machine (AMD EPYC), and are within the spread of the earlier runs.
- **How it got here**: the suite ran 3,300 events/s before issue #5 (profiles and the anomaly
  engine: 2,200/s) and the correlation engine in the service (1,800/s), measured by running this
  benchmark at those commits on a 2-core AMD EPYC machine. Since then: the JSONB columns are
  written with orjson, the correlation checkpoint writes changed buffer entries from an index instead of
  scanning the whole buffer, the items cache their technique keys, and the analysis worker tunes
  the garbage collector (start-up objects frozen, fewer collections; full passes over its heap
  had stalled batches by up to 230 ms).
- **At 5,000/s the suite is above its capacity here**, so the backlog grows for the whole phase and
  the latency measured is queueing time; the lower rate shows the latency of an unsaturated system.
  Each fixed-rate phase starts after a 12 s pause: the correlation engine holds every event that
  matches a chain step for its 30 s of allowed lateness and processes what is left once the
  stream has been idle for 5 s, and without the pause the previous phase's backlog (50,000 items)
  was measured as this phase's latency (p99 458 ms at 1,000/s instead of ~30 ms).

Next steps, in order of expected gain: partition the stream so that several analysis replicas
consume at once, each owning the join keys of its partition (patterns join by pod, image digest,
cluster or indicator, so a partition key must keep every pattern's steps together, or chains
must be joined across partitions); then `model_construct` instead of full pydantic validation
of envelopes that ingest already validated.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rates", type=int, nargs="+", default=[5_000, 1_000])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    figures = run(args.events, args.rates, args.seconds)
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    if args.write_doc:
        update_section(args.write_doc, "e2e", section(figures))


if __name__ == "__main__":
    main()

"""Benchmark: the transactional outbox relay every service runs (``qcdr_common.streams.outbox``).

Rows of ~600-byte envelopes are COPYed into a scratch outbox table (``DATABASE_URL``'s server),
then one relay publishes them to a Redis stream (``REDIS_URL``) in batches of 500, as the services
run it: claim and mark a batch, XADD it, commit. Wall rate and the relay process's own CPU per row
(PostgreSQL's and Redis' CPU not included); the median of ``--runs`` runs.

    uv run python bench/outbox_relay.py [--rows 50000] [--runs 3] [--write-doc docs/PERFORMANCE.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from scratch import scratch_database  # type: ignore[import-not-found,unused-ignore]

BATCH = 500
ENVELOPE = b'{"payload": "' + b"x" * 580 + b'"}'


async def measure(database_url: str, rows: int, runs: int) -> list[tuple[float, float]]:
    from qcdr_common.db import NAMING_CONVENTION, make_engine
    from qcdr_common.streams import OutboxRelay, outbox_table
    from redis.asyncio import Redis
    from sqlalchemy import MetaData

    engine = make_engine(database_url, pool_size=2)
    redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    table = outbox_table(metadata, "bench")
    prefix = f"qcdr-bench-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    results = []
    try:
        for run in range(runs):
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                await raw.copy_records_to_table(
                    table.name,
                    records=[(f"{run}-{i}", "bench:things", "bench.thing", ENVELOPE) for i in range(rows)],
                    columns=("envelope_id", "stream", "type", "data"),
                )
            relay = OutboxRelay(engine, redis, table, prefix=prefix, maxlen=10 * rows, batch=BATCH)
            wall, cpu = time.perf_counter(), time.process_time()
            published = await relay.publish_pending()
            results.append((time.perf_counter() - wall, time.process_time() - cpu))
            if published != rows:
                raise RuntimeError(f"published {published} of {rows} rows")
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    with scratch_database("outbox") as database_url:
        results = asyncio.run(measure(database_url, args.rows, args.runs))
    wall = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            "## Outbox relay: rows → stream entries",
            "",
            f"Machine: {machine()}. Date: {when}. `bench/outbox_relay.py`: {args.rows:,} outbox rows of",
            f"~600-byte envelopes published by one relay in batches of {BATCH}, PostgreSQL and Redis on the",
            f"same cores; median of {len(results)} runs.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| rows published | {args.rows / wall:,.0f} rows/s |",
            f"| relay CPU | {cpu / args.rows * 1e6:.1f} µs per row (this process only) |",
            "",
            "Every service's events, findings, policies and decisions leave through this relay. Before",
            "2026-12-05 it selected a batch, pipelined one XADD per row and marked the batch with an",
            "UPDATE listing its ids: 27 µs of relay CPU per row and ~27,000 rows/s on this machine.",
            "Now one statement claims and marks the batch (`UPDATE … FROM (SELECT … FOR UPDATE SKIP",
            "LOCKED) RETURNING`) and one script call per stream adds its entries: redis-py spent ~14 µs",
            "of client CPU per pipelined XADD (building, packing and parsing each command), the script",
            "~2 µs. What is left is mostly SQLAlchemy's rows and the envelopes' bytes.",
        ]
    )
    print(body)
    if args.write_doc:
        update_section(args.write_doc, "outbox-relay", body)


if __name__ == "__main__":
    main()

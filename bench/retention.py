"""Benchmark: retention (``qcdr_common.retention``) on ingest's real events table and outbox.

A scratch database migrated with ingest's migrations gets ``--rows`` events of ~1 KB (half of them
past the retention) and as many published outbox rows (half of them older than a day), generated
by PostgreSQL itself; one pass then deletes the old halves in batches of 5,000, as the service does
every ``QCDR_RETENTION_INTERVAL_S``. Rows deleted per second of wall time; PostgreSQL on the same
cores. The pass's pause between batches (10 ms, to leave the database to the traffic) is off here:
it is the deleting itself that is measured.

    uv run python bench/retention.py [--rows 200000] [--write-doc docs/PERFORMANCE.md]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from scratch import scratch_database  # type: ignore[import-not-found,unused-ignore]

PAYLOAD = '{"output": "' + "x" * 900 + '"}'


async def measure(database_url: str, rows: int) -> tuple[float, float, float, dict[str, int]]:
    from qcdr_common.db import make_engine
    from qcdr_common.retention import prune
    from qcdr_ingest.settings import IngestSettings
    from qcdr_ingest.workers import retention_rules
    from sqlalchemy import text

    engine = make_engine(database_url, pool_size=2)
    try:
        async with engine.begin() as conn:
            # event i is i seconds old, plus 29.5 days for the older half: half past 30 days
            await conn.execute(
                text(
                    "INSERT INTO ingest_events (id, source, category, severity, event_time, cluster,"
                    " namespace, pod, payload, received_at) SELECT 'e' || i, 'falco', 'Terminal shell',"
                    " 'high', now() - make_interval(secs => i + CASE WHEN i % 2 = 0 THEN 2592000 + 60"
                    " ELSE 0 END), 'prod', 'web', 'web-' || (i % 500), CAST(:payload AS jsonb), now()"
                    " FROM generate_series(1, :rows) AS i"
                ),
                {"rows": rows, "payload": PAYLOAD},
            )
            # outbox rows in write order: the older half published two days ago, then the rest now
            await conn.execute(
                text(
                    "INSERT INTO ingest_outbox (envelope_id, stream, type, data, published_at)"
                    " SELECT 'o' || i, 'ingest:events', 'ingest.event_received', convert_to(:payload,"
                    " 'UTF8'), CASE WHEN i <= :half THEN now() - interval '2 days' ELSE now() END"
                    " FROM generate_series(1, :rows) AS i"
                ),
                {"rows": rows, "half": rows // 2, "payload": PAYLOAD},
            )
            await conn.execute(text("ANALYZE ingest_events"))
            await conn.execute(text("ANALYZE ingest_outbox"))
        wall = time.perf_counter()
        deleted = await prune(engine, retention_rules(IngestSettings()), service="bench-retention")
        elapsed = time.perf_counter() - wall
        assert deleted is not None
        # the same pass again with nothing left to delete: what a quiet pass costs
        quiet = time.perf_counter()
        again = await prune(engine, retention_rules(IngestSettings()), service="bench-retention")
        quiet_s = time.perf_counter() - quiet
        assert again == {}, again
        # and once (auto)vacuum has removed the deleted rows' index entries
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ingest_events, ingest_outbox"))
        vacuumed = time.perf_counter()
        await prune(engine, retention_rules(IngestSettings()), service="bench-retention")
        vacuumed_s = time.perf_counter() - vacuumed
        return elapsed, quiet_s, vacuumed_s, deleted
    finally:
        await engine.dispose()


def main() -> None:
    from qcdr_ingest.db import upgrade

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    with scratch_database("retention", upgrade) as database_url:
        elapsed, quiet_s, vacuumed_s, deleted = asyncio.run(measure(database_url, args.rows))
    total = sum(deleted.values())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        [
            "## Retention: deleting old rows",
            "",
            f"Machine: {machine()}. Date: {when}. `bench/retention.py`: ingest's migrated tables with",
            f"{args.rows:,} events of ~1 KB and {args.rows:,} published outbox rows, half of each past",
            "its retention; one pass of ingest's rules (batches of 5,000, each its own transaction,",
            "no pause between them), PostgreSQL on the same cores.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| events deleted | {deleted.get('ingest_events', 0):,} |",
            f"| outbox rows deleted | {deleted.get('ingest_outbox', 0):,} |",
            f"| pass | {elapsed:.2f} s, {total / elapsed:,.0f} rows/s |",
            f"| the next pass, nothing to delete | {quiet_s * 1000:.1f} ms |",
            f"| the same after VACUUM | {vacuumed_s * 1000:.1f} ms |",
            "",
            "Ingest stores events at up to ~14,000/s here (the e2e benchmark above), so deleting a",
            "day's events costs a fraction of what storing them did, spread over the day's passes",
            "(every 10 minutes by default). A pass with nothing to delete reads the start of the time",
            "index and the outbox's 5,000 oldest rows. It took 75 ms before the batch query ordered by",
            "the time column: with statistics from before the deletion (half the table old) PostgreSQL",
            "chose a sequential scan of the whole table, on every pass (a test keeps the index scan).",
            "Past a few thousand events a second sustained,",
            "partitioning `ingest_events` by day and dropping old partitions (retention 0) costs",
            "nothing per row.",
        ]
    )
    print(body)
    if args.write_doc:
        update_section(args.write_doc, "retention", body)


if __name__ == "__main__":
    main()

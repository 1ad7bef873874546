"""One fetch round merged into an indicator set: the step once mode and the scheduler share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from qcdr_ingest.intel.fetch import FeedResult
from qcdr_ingest.intel.indicators import IndicatorSet
from qcdr_ingest.intel.parse import ParsedFeed, parse_feed


def merge_round(
    indicators: IndicatorSet,
    results: Sequence[FeedResult],
    *,
    configured: Iterable[str],
    now: datetime,
    ttl: timedelta,
) -> tuple[list[ParsedFeed | None], int]:
    """Parse and add every result with a body, forget feeds no longer configured, expire the rest.

    Returns each result's parsed feed (None without a body) and how many indicators expired. A
    feed removed from the configuration is forgotten at once; one that fails keeps its listings,
    which then decay with the TTL.
    """
    parsed: list[ParsedFeed | None] = []
    for result in results:
        feed = parse_feed(result.body, result.spec.format) if result.body is not None else None
        if feed is not None:
            indicators.add_feed(result.spec, None, feed, seen_at=result.fetched_at or now)
        parsed.append(feed)
    keep = set(configured)
    for name in [f.name for f in indicators.feed_counts() if f.name not in keep]:
        indicators.drop_feed(name)
    return parsed, indicators.expire(now, ttl)

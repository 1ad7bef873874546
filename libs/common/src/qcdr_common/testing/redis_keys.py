"""Deleting a test's Redis keys: the machine's Redis outlives every test run."""

from __future__ import annotations

from redis import Redis


def delete_prefixed_keys(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; how many went."""
    client = Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted

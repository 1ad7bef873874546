"""Stream key names: ``<prefix>:<producer>:<noun>``, with a ``:dlq`` sibling for dead letters."""

from __future__ import annotations


def stream_key(prefix: str, name: str) -> str:
    """``stream_key("qcdr", "ingest:events")`` -> ``"qcdr:ingest:events"``."""
    return f"{prefix}:{name}"


def dlq_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}:dlq"

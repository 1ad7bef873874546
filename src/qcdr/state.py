"""Once-mode and controller state kept as files in ``--state-dir`` (no Redis or Postgres needed).

- ``watermark.json``: the end of the last successfully fetched window.
- ``events.jsonl``: normalized findings of the lookback period, so that each cycle regenerates
  policies from everything still in the window (not only from what is new since the last cycle,
  which would unblock yesterday's indicators on a quiet day).

Writes go to a temporary file that is renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from pydantic import ValidationError
from qcdr_common.contracts.events.v1 import SecurityEvent

WATERMARK = "watermark.json"
EVENTS = "events.jsonl"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def watermark(self) -> datetime | None:
        file = self.path / WATERMARK
        if not file.exists():
            return None
        try:
            return datetime.fromisoformat(orjson.loads(file.read_bytes())["fetched_until"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{file} is not a qcdr watermark ({exc}); remove it to start over") from exc

    def save_watermark(self, until: datetime) -> None:
        _atomic_write(self.path / WATERMARK, orjson.dumps({"fetched_until": until.isoformat()}))

    def load_events(self) -> list[SecurityEvent]:
        file = self.path / EVENTS
        if not file.exists():
            return []
        events = []
        for lineno, line in enumerate(file.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(SecurityEvent.model_validate_json(line))
            except ValidationError as exc:
                # pydantic's text spans several lines; the first error is what the one line says
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                more = f" and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
                raise StateError(
                    f"{file}:{lineno} is not a stored event ({where}: {first['msg']}{more}); "
                    "remove the file to start over"
                ) from exc
        return events

    def save_events(self, events: list[SecurityEvent]) -> None:
        data = b"".join(e.model_dump_json().encode() + b"\n" for e in events)
        _atomic_write(self.path / EVENTS, data)


class StateError(RuntimeError):
    pass


def merge_events(
    stored: list[SecurityEvent], new: list[SecurityEvent], *, keep_after: datetime
) -> tuple[list[SecurityEvent], int]:
    """Stored plus new findings, de-duplicated by id (the newer copy wins); stored ones older than
    ``keep_after`` are dropped.

    What this run read is always kept: the source chose it (a fetch window, or an
    ``--events-file``, whose findings may be days old), and dropping it by the wall clock turned a
    file of older findings into an empty run. The window only ages out earlier runs' findings.
    Returns the merged list and how many of ``new`` were already known.
    """
    by_id = {e.id: e for e in stored if e.event_time >= keep_after}
    known = 0
    for event in new:
        if event.id in by_id:
            known += 1
        by_id[event.id] = event
    merged = list(by_id.values())
    merged.sort(key=lambda e: (e.event_time, e.id))
    return merged, known


def fetch_window(
    now: datetime, hours: float, watermark: datetime | None, overlap: timedelta
) -> tuple[datetime, datetime]:
    """The window to fetch: the lookback, or from the watermark minus an overlap for late arrivals."""
    start = now - timedelta(hours=hours)
    if watermark is not None:
        start = max(start, watermark - overlap)
    return start, now

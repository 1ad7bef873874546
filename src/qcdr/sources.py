"""Where once-mode findings come from: the Qualys CDR API, or a JSON/JSONL file of findings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

ProgressFn = Callable[[int, int | None], None]


@dataclass
class SourceResult:
    name: str
    findings: list[Any]  # raw items; the normalizer reports the ones that are not findings
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (reference, reason)
    reported_total: int | None = None
    pages: int = 0
    requests: int = 0
    retries: int = 0
    window_splits: int = 0
    duplicates_dropped: int = 0
    warnings: list[str] = field(default_factory=list)
    # Distinct items received: findings (unique by uuid) plus items rejected before normalizing.
    # Fixed at construction, because the pipeline drains ``findings`` while normalizing.
    fetched: int = field(init=False)

    def __post_init__(self) -> None:
        self.fetched = len(self.findings) + len(self.rejected)

    def drain(self) -> Iterator[Any]:
        """Yield the raw findings in order, releasing each one as it is taken (peak memory)."""
        items = self.findings
        items.reverse()
        while items:
            yield items.pop()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fetched": self.fetched,
            "reported_total": self.reported_total,
            "pages": self.pages,
            "requests": self.requests,
            "retries": self.retries,
            "window_splits": self.window_splits,
            "duplicates_dropped": self.duplicates_dropped,
            "warnings": self.warnings,
        }


class FindingsSource(Protocol):
    async def fetch(
        self, start: datetime, end: datetime, *, progress: ProgressFn | None = None
    ) -> SourceResult: ...


class SourceError(RuntimeError):
    """A one-line, user-facing reason the findings could not be read."""


class FileSource:
    """Findings from ``--events-file``: a JSON array, an object with ``content``, or JSON lines.

    The file is what the user chose to process, so no time window is applied to it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    async def fetch(
        self, start: datetime, end: datetime, *, progress: ProgressFn | None = None
    ) -> SourceResult:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read events file {self.path}: {exc.strerror or exc}") from exc
        items, unparseable = self._parse(data)
        rejected = list(unparseable)
        findings: list[Any] = []
        seen: set[str] = set()
        duplicates = 0
        for item in items:
            uuid = item.get("uuid") if isinstance(item, dict) else None
            if not isinstance(uuid, str) or not uuid.strip():
                # Kept: the normalizer reports it as malformed with the precise reason.
                findings.append(item)
            elif uuid in seen:
                duplicates += 1
            else:
                seen.add(uuid)
                findings.append(item)
        if progress:
            progress(len(items), len(items))
        return SourceResult(
            name=f"file:{self.path}",
            findings=findings,
            rejected=rejected,
            reported_total=len(items) + len(unparseable),
            duplicates_dropped=duplicates,
        )

    def _parse(self, data: bytes) -> tuple[list[Any], list[tuple[str, str]]]:
        stripped = data.lstrip()
        if not stripped:
            return [], []
        if stripped[:1] in (b"[", b"{"):
            try:
                doc = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                doc = None  # may still be JSON lines whose first line is an object
            if isinstance(doc, list):
                return doc, []
            if isinstance(doc, dict):
                content = doc.get("content", [doc] if "uuid" in doc else None)
                if isinstance(content, list):
                    return content, []
                raise SourceError(f"{self.path}: a JSON object without a 'content' list of findings")
        items: list[Any] = []
        rejected: list[tuple[str, str]] = []
        for lineno, line in enumerate(stripped.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                # One bad line costs that line only; the rest of the file is still processed.
                rejected.append((f"line {lineno}", f"not JSON: {exc}"))
        if not items and rejected:
            raise SourceError(f"{self.path}: no line is JSON ({rejected[0][0]}: {rejected[0][1]})")
        return items, rejected

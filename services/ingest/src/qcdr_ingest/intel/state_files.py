"""Intel state as files under ``--state-dir``: once mode keeps it here instead of PostgreSQL.

Layout::

    state_dir/feeds/<name>.body    the last good copy, byte for byte
    state_dir/feeds/<name>.json    its metadata (URL, ETag, Last-Modified, times, last error)
    state_dir/reputation.json      the AbuseIPDB answers, keyed by IP

Every file is replaced atomically (temp file in the same directory, fsync, rename), so a crash
leaves either the old or the new file, never half of one. The body is written before its metadata,
which records the body's SHA-256: if a crash falls between the two renames, the mismatch is noticed
and the ETag dropped, so the next request is unconditional. One process owns a state dir at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import re
import tempfile
from contextlib import suppress
from datetime import datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from qcdr_common.logging import get_logger

from qcdr_ingest.intel.model import FeedAttempt, Reputation, StoredFeed

_FEED_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_META_VERSION = 1
_REPUTATION_VERSION = 1

log = get_logger(__name__)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _FeedMeta(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int = _META_VERSION
    name: str
    url: str
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: AwareDatetime | None = None  # None: the feed never succeeded, there is no body
    attempted_at: AwareDatetime
    last_error: str | None = None
    body_sha256: str | None = None
    body_size: int | None = None


class FileFeedStateStore:
    """:class:`~qcdr_ingest.intel.model.FeedStateStore` on files (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "feeds"
        self._lock = asyncio.Lock()  # serialises read-modify-write of the metadata

    def _paths(self, name: str) -> tuple[Path, Path]:
        if not _FEED_NAME.fullmatch(name):
            raise ValueError(f"not a feed name: {name!r}")
        return self.directory / f"{name}.body", self.directory / f"{name}.json"

    def _read_meta(self, path: Path) -> _FeedMeta | None:
        try:
            return _FeedMeta.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            log.warning("unreadable feed state ignored", path=str(path), error=str(exc).splitlines()[0])
            return None

    def _load(self, name: str) -> StoredFeed | None:
        body_path, meta_path = self._paths(name)
        meta = self._read_meta(meta_path)
        if meta is None or meta.fetched_at is None:
            return None
        try:
            body = body_path.read_bytes()
        except FileNotFoundError:
            log.warning("feed state without its body ignored", feed=name, path=str(body_path))
            return None
        etag, last_modified = meta.etag, meta.last_modified
        if meta.body_sha256 is not None and hashlib.sha256(body).hexdigest() != meta.body_sha256:
            # a crash between writing the body and its metadata: the validators belong to another body
            etag = last_modified = None
        return StoredFeed(
            name=meta.name,
            url=meta.url,
            body=body,
            etag=etag,
            last_modified=last_modified,
            fetched_at=meta.fetched_at,
            attempted_at=meta.attempted_at,
            last_error=meta.last_error,
        )

    def _save(self, feed: StoredFeed) -> None:
        body_path, meta_path = self._paths(feed.name)
        atomic_write(body_path, feed.body)
        meta = _FeedMeta(
            name=feed.name,
            url=feed.url,
            etag=feed.etag,
            last_modified=feed.last_modified,
            fetched_at=feed.fetched_at,
            attempted_at=feed.attempted_at,
            last_error=feed.last_error,
            body_sha256=hashlib.sha256(feed.body).hexdigest(),
            body_size=len(feed.body),
        )
        atomic_write(meta_path, meta.model_dump_json(indent=2).encode())

    def _record_failure(self, name: str, url: str, at: datetime, error: str) -> None:
        _, meta_path = self._paths(name)
        meta = self._read_meta(meta_path)
        if meta is None:
            meta = _FeedMeta(name=name, url=url, attempted_at=at, last_error=error)
        else:
            update: dict[str, object] = {"attempted_at": at, "last_error": error}
            if meta.fetched_at is None:
                # the URL stays the body's origin; without a body it follows the attempts
                update["url"] = url
            meta = meta.model_copy(update=update)
        atomic_write(meta_path, meta.model_dump_json(indent=2).encode())

    async def load(self, name: str) -> StoredFeed | None:
        async with self._lock:
            return await asyncio.to_thread(self._load, name)

    async def last_attempt(self, name: str) -> FeedAttempt | None:
        _, meta_path = self._paths(name)
        async with self._lock:
            meta = await asyncio.to_thread(self._read_meta, meta_path)
        if meta is None:
            return None
        return FeedAttempt(
            name=meta.name, url=meta.url, attempted_at=meta.attempted_at, error=meta.last_error
        )

    async def save(self, feed: StoredFeed) -> None:
        async with self._lock:
            await asyncio.to_thread(self._save, feed)

    async def record_failure(self, name: str, url: str, at: datetime, error: str) -> None:
        """Note the failed attempt; the last good body (and the URL it came from) stay as they are."""
        async with self._lock:
            await asyncio.to_thread(self._record_failure, name, url, at, error)


def _canonical_ip(ip: str) -> str | None:
    try:
        return ipaddress.ip_address(ip.strip()).compressed
    except ValueError:
        return None


class FileReputationCache:
    """:class:`~qcdr_ingest.intel.model.ReputationCache` in ``state_dir/reputation.json``.

    Read once, kept in memory, rewritten atomically on every ``put_many``. Keys are canonical IPs
    (``2001:DB8::1`` and ``2001:db8::1`` are one entry); an older answer never replaces a newer one.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "reputation.json"
        self._items: dict[str, Reputation] | None = None
        self._lock = asyncio.Lock()

    def _read(self) -> dict[str, Reputation]:
        try:
            data = json.loads(self.path.read_bytes())
            if not isinstance(data, dict) or data.get("version") != _REPUTATION_VERSION:
                raise ValueError(f"expected version {_REPUTATION_VERSION}")
            items = (Reputation.model_validate(item) for item in data["items"].values())
            return {item.ip: item for item in items}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            # a cache: start again rather than stop the run
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("unreadable reputation cache ignored", path=str(self.path), error=reason)
            return {}

    def _write(self, items: dict[str, Reputation]) -> None:
        data = {
            "version": _REPUTATION_VERSION,
            "items": {ip: items[ip].model_dump(mode="json") for ip in sorted(items)},
        }
        atomic_write(self.path, json.dumps(data, indent=1).encode())

    async def _loaded(self) -> dict[str, Reputation]:
        if self._items is None:
            self._items = await asyncio.to_thread(self._read)
        return self._items

    async def get_many(self, ips: list[str]) -> dict[str, Reputation]:
        async with self._lock:
            items = await self._loaded()
        found: dict[str, Reputation] = {}
        for ip in ips:
            key = _canonical_ip(ip)
            if key is not None and key in items:
                found[ip] = items[key]
        return found

    async def put_many(self, items: list[Reputation]) -> None:
        if not items:
            return
        updates: dict[str, Reputation] = {}
        for item in items:
            key = _canonical_ip(item.ip)
            if key is None:
                raise ValueError(f"not an IP address: {item.ip!r}")
            previous = updates.get(key)
            if previous is None or item.checked_at >= previous.checked_at:
                updates[key] = item if item.ip == key else item.model_copy(update={"ip": key})
        async with self._lock:
            current = dict(await self._loaded())
            for key, item in updates.items():
                previous = current.get(key)
                if previous is None or item.checked_at >= previous.checked_at:
                    current[key] = item
            await asyncio.to_thread(self._write, current)
            self._items = current

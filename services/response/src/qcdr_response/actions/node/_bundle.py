"""Private, content-addressed storage on the node: quarantined files and forensics bundles.

Everything is written owner-only (directories 0700, files 0600), first under a temporary name
and then renamed into place, so a crash never leaves a half-written blob under its hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024


def canonical_json(obj: Any) -> bytes:
    """The one byte form a manifest is hashed in: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode is filtered by the umask; exist_ok leaves an old mode
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` (0600) atomically: a temporary file in the same directory, then
    a rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_hashing(src_fd: int, dst: Path, keep: int, hash_all: int | None = None) -> dict[str, Any]:
    """Copy at most ``keep`` bytes of ``src_fd`` to ``dst`` (0600) while hashing the whole file
    (at most ``hash_all`` bytes when given). Returns the file's ``sha256`` and ``size`` read, and
    the kept part's ``stored_sha256``, ``stored_bytes`` and ``truncated``."""
    whole, kept = hashlib.sha256(), hashlib.sha256()
    size = stored = 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while hash_all is None or size < hash_all:
            chunk = os.read(src_fd, CHUNK)
            if not chunk:
                break
            whole.update(chunk)
            size += len(chunk)
            room = keep - stored
            if room > 0:
                part = chunk[:room]
                out.write(part)
                kept.update(part)
                stored += len(part)
        out.flush()
        os.fsync(out.fileno())
    return {
        "sha256": whole.hexdigest(),
        "size": size,
        "stored_sha256": kept.hexdigest(),
        "stored_bytes": stored,
        "truncated": stored < size,
    }


class BundleWriter:
    """A forensics bundle being written: blobs named by their sha256 and, last, ``manifest.json``.
    The bundle's id is the sha256 of the canonical manifest, and its directory is named by it."""

    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)
        self.tmp = private_dir(root / f".tmp-{uuid.uuid4().hex}")
        self.blobs = private_dir(self.tmp / "blobs")
        self.stored_bytes = 0

    def add_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.blobs / digest
        if not target.exists():
            write_private(target, data)
            self.stored_bytes += len(data)
        return digest

    def add_file(self, src_fd: int, keep: int) -> dict[str, Any]:
        """Copy up to ``keep`` bytes of an open file as a blob; hashes the whole file."""
        staging = self.blobs / f".staging-{uuid.uuid4().hex}"
        info = copy_hashing(src_fd, staging, keep)
        blob = self.blobs / info["stored_sha256"]
        if blob.exists():
            staging.unlink()
        else:
            staging.rename(blob)
            self.stored_bytes += info["stored_bytes"]
        return info

    def finish(self, manifest: dict[str, Any]) -> tuple[str, Path]:
        body = canonical_json(manifest)
        bundle_id = hashlib.sha256(body).hexdigest()
        write_private(self.tmp / "manifest.json", body)
        final = self.root / bundle_id
        try:
            self.tmp.rename(final)
        except OSError:  # the same bundle exists already (identical manifest): keep that one
            if not (final / "manifest.json").exists():
                raise
            self.abort()
        return bundle_id, final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

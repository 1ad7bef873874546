"""Paths inside a container, resolved by hand and confined to its root.

The container's root is ``/proc/<init pid>/root``. The kernel is never asked to follow a symlink:
each component is looked up with ``lstat`` relative to an ``O_PATH`` descriptor of its parent and
opened with ``O_NOFOLLOW``; a symlink's target is read and walked the same way, an absolute one
from the container's root, and ``..`` never climbs above that root. So ``/tmp/x -> /etc/passwd``
reaches the *container's* ``/etc/passwd`` (refused unless it lies under an allowed root), and
``../../../../etc/passwd`` stops at the root instead of reaching the host's. A component swapped
for a symlink between the check and the open fails the open (``ELOOP``/``ENOTDIR``).

A symlink's target is bytes and need not be UTF-8: inside, a path is ``str`` with surrogate
escapes (``os.fsdecode``, exact bytes for the system calls); whatever leaves the agent (messages,
details, undo records, manifests) is ``shown()`` text, and an undo record keeps the exact bytes
beside it (``path_record``/``record_path``).
"""

from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from qcdr_response.actions import validation
from qcdr_response.actions.base import ActionError, TargetGoneError

MAX_SYMLINKS = 40  # as the kernel's own limit
# where dropped payloads usually land; paths inside the container, not files of the agent's own
DEFAULT_ALLOWED_ROOTS = (
    *("/tmp", "/var/tmp", "/dev/shm"),  # noqa: S108
    *("/usr/local/bin", "/opt", "/home", "/root", "/app"),
)


def shown(path: str | PurePosixPath) -> str:
    """A container path as text that always serialises: the bytes a name that is not UTF-8 holds
    appear as ``\\xNN`` (``/tmp/\\xff``); a UTF-8 path is unchanged."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def path_record(path: str | PurePosixPath) -> dict[str, str]:
    """``{"path": shown(path)}``, with ``path_hex`` (the exact bytes) when the shown text is not
    the path itself, so a record restores the very name, not its display form."""
    record = {"path": shown(path)}
    if record["path"] != str(path):
        record["path_hex"] = os.fsencode(str(path)).hex()
    return record


def record_path(record: dict[str, Any]) -> str:
    """The path a ``path_record`` describes (surrogate escapes for bytes that are not UTF-8);
    ``ValueError`` when its ``path_hex`` is not hex or does not match its ``path``."""
    if "path_hex" not in record:
        return str(record["path"])
    raw = record["path_hex"]
    if not isinstance(raw, str):
        raise ValueError("path_hex is not a string")
    path = os.fsdecode(bytes.fromhex(raw))
    if shown(path) != record["path"]:
        raise ValueError("path_hex does not match path")
    return path


class Resolved:
    """Where a path led: the parent directory (an ``O_PATH`` descriptor, closed with the object),
    the final name in it, the canonical container path reached, and the entry's ``lstat``
    (``None`` when the entry does not exist and that was allowed)."""

    def __init__(self, fds: list[int], names: list[str], name: str, st: os.stat_result | None) -> None:
        self._fds = fds
        self.parent_fd = fds[-1]
        self.name = name
        self.path = PurePosixPath("/" + "/".join([*names, name]))
        self.shown = shown(self.path)
        self.stat = st

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> Resolved:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open_regular(self, max_bytes: int | None = None) -> tuple[int, os.stat_result]:
        """Open the entry read-only (no following, no blocking on a FIFO); it must be a regular
        file (and no larger than ``max_bytes``). Returns the descriptor and its ``fstat``."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.name, flags, dir_fd=self.parent_fd)
        except OSError as exc:
            raise ActionError(f"{self.shown}: cannot open ({exc.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ActionError(f"{self.shown} is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            os.close(fd)
            raise ActionError(f"{self.shown} is {st.st_size} bytes, over the limit of {max_bytes}")
        return fd, st

    def still_same(self, st: os.stat_result) -> bool:
        """Whether the name in the parent still is the inode ``st`` describes."""
        try:
            now = os.stat(self.name, dir_fd=self.parent_fd, follow_symlinks=False)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def check_roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    """Allowed roots (a parameter's validator): canonical absolute paths, never ``/`` itself."""
    for root in roots:
        validation.container_path(root, "allowed_roots")
        if root == "/":
            raise ValueError("/ cannot be an allowed root")
    return roots


def container_root(proc: Path, init_pid: int) -> Path:
    return proc / str(init_pid) / "root"


def resolve(root: Path, path: PurePosixPath, *, allow_missing: bool = False) -> Resolved:
    """Walk ``path`` (absolute, canonical) below ``root`` as described in the module docstring."""
    if str(path) == "/":
        raise ActionError("/ is not a file")
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ActionError(f"container root {root} cannot be opened ({exc.strerror})") from None
    fds: list[int] = [root_fd]
    names: list[str] = []
    queue = deque(path.parts[1:])
    hops = 0
    try:
        while queue:
            part = queue.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if len(fds) > 1:
                    os.close(fds.pop())
                    names.pop()
                continue
            last = not queue
            try:
                st = os.stat(part, dir_fd=fds[-1], follow_symlinks=False)
            except FileNotFoundError:
                if last and allow_missing:
                    return Resolved(fds, names, part, None)
                raise TargetGoneError(f"{_join(names, part)} does not exist in the container") from None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise ActionError(f"{shown(path)}: too many levels of symbolic links")
                link = os.readlink(part, dir_fd=fds[-1])
                if link.startswith("/"):  # re-rooted at the container's root
                    while len(fds) > 1:
                        os.close(fds.pop())
                    names.clear()
                queue.extendleft(reversed(link.split("/")))
                continue
            if last:
                return Resolved(fds, names, part, st)
            if not stat.S_ISDIR(st.st_mode):
                raise ActionError(f"{_join(names, part)} is not a directory")
            try:
                fds.append(os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
            except OSError as exc:
                raise ActionError(f"{_join(names, part)}: cannot open ({exc.strerror})") from None
            names.append(part)
        raise ActionError(f"{shown(path)} leads to the container's root directory")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _join(names: list[str], part: str) -> str:
    return shown("/" + "/".join([*names, part]))


def resolve_allowed(
    root: Path, path: str, roots: tuple[str, ...], *, allow_missing: bool = False
) -> Resolved:
    """Resolve ``path`` (already canonical and under ``roots``) confined to ``root``; where it
    leads must lie under ``roots`` too."""
    requested = validation.under_roots(validation.container_path(path), roots)
    resolved = resolve(root, requested, allow_missing=allow_missing)
    try:
        validation.under_roots(resolved.path, roots)
    except ActionError as exc:
        resolved.close()
        raise ActionError(f"{shown(path)} leads to {resolved.shown}: {exc.reason}") from None
    return resolved

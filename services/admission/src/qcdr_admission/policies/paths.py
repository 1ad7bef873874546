"""Host paths compared by canonical path and by whole components, never as strings.

:func:`canonical` collapses ``//``, ``/./`` and ``..``, drops a trailing ``/``, makes a relative
path absolute (the kubelet resolves it against ``/``) and maps ``/var/run`` to ``/run`` (a symlink
on every current distribution). Symbolic links elsewhere on the node cannot be seen from
admission; blocking the ancestors of a protected path (``/``, ``/run``) covers the common ways in.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

_ALIASES = (("/var/run", "/run"),)


def canonical(path: str) -> str:
    normal = posixpath.normpath("/" + path.lstrip("/")) if path else "/"
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    for alias, target in _ALIASES:
        if normal == alias or normal.startswith(alias + "/"):
            normal = target + normal[len(alias) :]
    return normal


def within(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it (both canonical)."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def overlaps(path: str, protected: str) -> bool:
    """Mounting ``path`` exposes ``protected``: one is within the other (both canonical)."""
    return within(path, protected) or within(protected, path)


def first_overlap(path: str, protected: Iterable[str]) -> str | None:
    for item in protected:
        if overlaps(path, item):
            return item
    return None

"""Which paths matter, matched on path *components*, never on string prefixes.

``/etc/shadow`` matches ``/etc/shadow`` (and ``/etc//shadow``, ``/etc/./shadow``), but not
``/etc/shadow.bak`` nor ``/etc/shadowfax``; the directory ``/usr/bin`` covers ``/usr/bin/x`` but
not ``/usr/binaries/x``. Paths are normalized (``.``, ``..``, repeated slashes) before matching.

Pattern syntax of the sensitive-path lists:

* ``/etc/shadow``: that file (anchored at the root);
* ``/root/.ssh/``: that directory and everything under it (a trailing slash);
* ``**/.aws/credentials``: those trailing components under any directory;
* ``**/.ssh/``: everything under any directory of that name.

Matching costs a few set lookups per ancestor of the path; it runs only on behaviour that is new
to a profile, or on writes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

FLOATING = "**/"


def normalize(path: str) -> str:
    normalized = posixpath.normpath(path)
    # POSIX keeps a leading "//"; the kernel does not care
    return "/" + normalized.lstrip("/") if normalized.startswith("//") else normalized


def ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a", "/a/b"]`` (the directories containing it, outermost first)."""
    parts = path.split("/")[1:-1]
    found = []
    current = ""
    for part in parts:
        current = f"{current}/{part}"
        found.append(current)
    return found


def under(path: str, directories: frozenset[str]) -> str | None:
    """The outermost of ``directories`` that contains ``path`` (normalized), or None."""
    for directory in ancestors(normalize(path)):
        if directory in directories:
            return directory
    return None


@dataclass(frozen=True, slots=True)
class SensitivePath:
    pattern: str
    technique: str


# Defaults; the detector's config adds to them. Techniques: what reading or writing the path
# most plausibly serves.
DEFAULT_SENSITIVE: tuple[tuple[str, str], ...] = (
    ("/etc/shadow", "T1003.008"),  # OS credential dumping: /etc/passwd and /etc/shadow
    ("/etc/gshadow", "T1003.008"),
    ("/etc/passwd", "T1003.008"),
    ("/etc/sudoers", "T1548.003"),  # sudo and sudo caching
    ("/etc/sudoers.d/", "T1548.003"),
    ("/etc/pam.d/", "T1556.003"),  # pluggable authentication modules
    ("/etc/ld.so.preload", "T1574.006"),  # dynamic linker hijacking
    ("/etc/crontab", "T1053.003"),
    ("/etc/cron.d/", "T1053.003"),
    ("/var/spool/cron/", "T1053.003"),
    ("/root/.ssh/", "T1552.004"),  # private keys
    ("**/.ssh/", "T1552.004"),
    ("**/.aws/credentials", "T1552.001"),  # credentials in files
    ("**/.config/gcloud/", "T1552.001"),
    ("**/.azure/", "T1552.001"),
    ("**/.kube/config", "T1552.001"),
    ("**/.docker/config.json", "T1552.001"),
    ("/etc/kubernetes/", "T1552.001"),
    # the pod's service-account token: steal application access token
    ("/var/run/secrets/kubernetes.io/serviceaccount/", "T1528"),
    ("/run/secrets/kubernetes.io/serviceaccount/", "T1528"),
    ("/var/run/secrets/eks.amazonaws.com/serviceaccount/", "T1528"),
    ("/run/secrets/eks.amazonaws.com/serviceaccount/", "T1528"),
)
EXTRA_TECHNIQUE = "T1552"  # unsecured credentials, for paths an operator adds


class SensitiveMatcher:
    """Compiled sensitive-path patterns: per path, one lookup per ancestor and a few suffixes."""

    def __init__(self, patterns: Iterable[tuple[str, str]]) -> None:
        self.files: dict[str, SensitivePath] = {}
        self.dirs: dict[str, SensitivePath] = {}
        self.floating_files: dict[tuple[str, ...], SensitivePath] = {}
        self.floating_dirs: dict[tuple[str, ...], SensitivePath] = {}
        for pattern, technique in patterns:
            entry = SensitivePath(pattern, technique)
            directory = pattern.endswith("/")
            if pattern.startswith(FLOATING):
                parts = tuple(p for p in pattern[len(FLOATING) :].split("/") if p)
                if not parts:
                    raise ValueError(f"sensitive path pattern names nothing: {pattern!r}")
                (self.floating_dirs if directory else self.floating_files)[parts] = entry
            elif pattern.startswith("/"):
                path = normalize(pattern)
                if path == "/":
                    raise ValueError("sensitive path pattern '/' would match everything")
                (self.dirs if directory else self.files)[path] = entry
            else:
                raise ValueError(f"sensitive path pattern must start with '/' or '**/': {pattern!r}")
        self._widths = sorted({len(k) for k in self.floating_dirs} | {len(k) for k in self.floating_files})

    def match(self, path: str) -> SensitivePath | None:
        path = normalize(path)
        found = self.files.get(path)
        if found is not None:
            return found
        for directory in ancestors(path):
            found = self.dirs.get(directory)
            if found is not None:
                return found
        if not self._widths:
            return None
        parts = tuple(p for p in path.split("/") if p)
        for width in self._widths:
            if width <= len(parts):
                found = self.floating_files.get(parts[-width:])
                if found is not None:
                    return found
            # a floating directory: any run of components followed by at least one more
            for start in range(0, len(parts) - width):
                found = self.floating_dirs.get(parts[start : start + width])
                if found is not None:
                    return found
        return None


# Directories a running container has no business writing binaries or libraries into.
# Writing a program there masquerades it as part of the image (T1036.005, match legitimate
# name or location); writing a library there hijacks every program that loads it (T1574).
BINARY_DIRS: dict[str, str] = {
    **dict.fromkeys(
        ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"), "T1036.005"
    ),
    **dict.fromkeys(
        ("/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec"), "T1574"
    ),
}
BINARY_DIR_SET = frozenset(BINARY_DIRS)

# Writable, usually memory-backed directories: an executable there was not in the image.
# paths matched against events, never files this process opens
WRITABLE_DIRS = frozenset({"/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run", "/dev/mqueue"})  # noqa: S108


def binary_dir_write(path: str) -> str | None:
    """The binary directory ``path`` is inside, unless it is bytecode a runtime caches there
    (``__pycache__/*.pyc``: Python writes those beside installed modules on first import)."""
    directory = under(path, BINARY_DIR_SET)
    if directory is None:
        return None
    parts = path.rsplit("/", 2)
    if len(parts) == 3 and parts[1] == "__pycache__" and parts[2].endswith(".pyc"):
        return None
    return directory

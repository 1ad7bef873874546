"""Drift: a running container stops being the image it was started from.

* ``drift.new_executable``: an exec of a path the image's baseline never executed (after
  learning). The baseline is the profile's processes: what the image's containers executed while
  learning, shared by every replica of the image.
* ``drift.modified_executable``: a known path executed with a hash never seen for it (only for
  paths whose hash was learned: turning an IMA policy on later must not make every binary "new").
* ``drift.package_manager``: a package manager installing something, learning or not: a package
  installed into a running container is drift whatever the baseline says. Read-only queries
  (``dpkg -l``, ``apt list``, ``rpm -q``, ``apk info``...) are not.
* ``drift.binary_dir_write``: a write under a binary or library directory, learning or not.

:func:`package_manager` decides what a command line installs (a pure function); :func:`check`
decides, against the event's profile, what drifted and builds the findings (called by
:func:`qcdr_analysis.profiles.profiler.observe` only when a cheap pre-check found a suspect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qcdr_common.contracts.events.v1 import Severity

from qcdr_analysis.profiles.decisions import Decisions
from qcdr_analysis.profiles.explain import Score, baseline, build
from qcdr_analysis.profiles.features import Features
from qcdr_analysis.profiles.paths import BINARY_DIRS, WRITABLE_DIRS, binary_dir_write, under
from qcdr_analysis.profiles.profile import PROCESSES

NEW_EXECUTABLE = "drift.new_executable"
MODIFIED_EXECUTABLE = "drift.modified_executable"
PACKAGE_MANAGER = "drift.package_manager"
BINARY_DIR_WRITE = "drift.binary_dir_write"

T_NEW_EXECUTABLE = ("T1059",)  # command and scripting interpreter: something new was run
T_MODIFIED_EXECUTABLE = ("T1036.005",)  # masquerading: a replaced binary under a legitimate name
# Not T1072 (software deployment tools: abusing a central deployment system such as SCCM to push
# code to many hosts). Installing packages into one running container brings tools that were not
# in the image from outside: ingress tool transfer is the closest technique.
T_PACKAGE_MANAGER = ("T1105",)


@dataclass(frozen=True, slots=True)
class _Manager:
    # subcommands (first word that is not an option) that install or fetch; None: any use does
    installs: frozenset[str] | None = None
    # first words (subcommands or options) that only query; ignored when ``installs`` is set
    queries: frozenset[str] = frozenset()
    # option prefixes that make the call a query (rpm -qa, pacman -Qi)
    query_prefixes: tuple[str, ...] = ()


_APT_QUERIES = frozenset(
    {
        "list",
        "show",
        "search",
        "policy",
        "madison",
        "depends",
        "rdepends",
        "showpkg",
        "showsrc",
        "help",
        "-v",
        "--version",
        "-h",
        "--help",
    }
)
_RPM_FAMILY_QUERIES = frozenset(
    {
        "list",
        "info",
        "search",
        "repolist",
        "provides",
        "whatprovides",
        "check-update",
        "deplist",
        "repoquery",
        "history",
        "help",
        "--version",
        "-h",
        "--help",
    }
)
_SYSTEM: dict[str, _Manager] = {
    **dict.fromkeys(("apt", "apt-get", "aptitude", "apt-cache"), _Manager(queries=_APT_QUERIES)),
    "dpkg": _Manager(
        queries=frozenset(
            {
                "-l",
                "--list",
                "-L",
                "--listfiles",
                "-s",
                "--status",
                "-S",
                "--search",
                "-p",
                "--print-avail",
                "--print-architecture",
                "--audit",
                "-C",
                "--print-foreign-architectures",
                "--compare-versions",
                "--version",
                "--get-selections",
                "--help",
            }
        )
    ),
    **dict.fromkeys(("yum", "dnf", "microdnf", "tdnf"), _Manager(queries=_RPM_FAMILY_QUERIES)),
    "rpm": _Manager(
        queries=frozenset({"--eval", "-E", "--version", "--help", "--showrc"}),
        query_prefixes=("-q", "--query", "-V", "--verify"),
    ),
    "apk": _Manager(
        queries=frozenset(
            {
                "info",
                "list",
                "search",
                "policy",
                "version",
                "dot",
                "stats",
                "audit",
                "--version",
                "--help",
                "-h",
            }
        )
    ),
    "zypper": _Manager(
        queries=frozenset(
            {
                "search",
                "se",
                "info",
                "if",
                "list-updates",
                "lu",
                "repos",
                "lr",
                "packages",
                "pa",
                "patches",
                "--version",
                "--help",
            }
        )
    ),
    "pacman": _Manager(query_prefixes=("-Q", "-F", "--query", "--files", "-V", "--version", "-h")),
    **dict.fromkeys(("opkg", "emerge", "nix-env", "snap", "flatpak"), _Manager()),
}
_PIP = _Manager(installs=frozenset({"install", "download"}))
_LANGUAGE: dict[str, _Manager] = {
    **dict.fromkeys(("pip", "pip2", "pip3", "pipx"), _PIP),
    "npm": _Manager(installs=frozenset({"install", "i", "add", "ci", "update", "up", "upgrade", "in"})),
    "pnpm": _Manager(installs=frozenset({"install", "i", "add", "update", "up"})),
    "yarn": _Manager(installs=frozenset({"add", "install", "upgrade", "global"})),
    "gem": _Manager(installs=frozenset({"install", "update"})),
    "bundle": _Manager(installs=frozenset({"install", "update", "add"})),
    "composer": _Manager(installs=frozenset({"install", "require", "update"})),
    "cargo": _Manager(installs=frozenset({"install"})),
    "go": _Manager(installs=frozenset({"install", "get"})),
    **dict.fromkeys(
        ("conda", "mamba", "micromamba"), _Manager(installs=frozenset({"install", "create", "update"}))
    ),
    "uv": _Manager(installs=frozenset({"pip", "add", "tool", "sync"})),
}


def _name(path: str) -> str:
    name = path.rpartition("/")[2]
    # pip3.11, python3.12 -> pip3, python3 (versioned names of the same tool)
    stem, dot, minor = name.rpartition(".")
    return stem if dot and stem and minor.isdigit() else name


def _first_word(arguments: list[str]) -> str:
    for word in arguments:
        if not word.startswith("-"):
            return word
    return ""


def package_manager(path: str, arguments: str) -> str | None:
    """The package manager's name when this exec installs (or may install) packages, else None."""
    name = _name(path)
    words = arguments.split()
    manager = _SYSTEM.get(name)
    if manager is not None:
        first = words[0] if words else ""
        if first in manager.queries or _first_word(words) in manager.queries:
            return None
        if manager.query_prefixes and first.startswith(manager.query_prefixes):
            return None
        return name
    manager = _LANGUAGE.get(name)
    if manager is None and name.startswith("python") and "-m" in words:
        # python -m pip install ...: the module is the tool
        index = words.index("-m")
        module = words[index + 1] if index + 1 < len(words) else ""
        manager, name, words = _LANGUAGE.get(module), module, words[index + 2 :]
    if manager is None or manager.installs is None:
        return None
    return name if _first_word(words) in manager.installs else None


DRIFT_SCORE = {
    NEW_EXECUTABLE: 95,
    MODIFIED_EXECUTABLE: 95,
    PACKAGE_MANAGER: 80,
    BINARY_DIR_WRITE: 80,
}


def check(decided: Decisions, features: Features, learning: bool) -> None:
    """Note the drift in this event (and raise its findings) on the event's decisions."""
    profile = decided.ctx.profile
    path = features.exec_path
    if path:
        manager = package_manager(path, features.arguments)
        if manager is not None and decided.due(PACKAGE_MANAGER, path):
            command = f"{path} {features.arguments}".strip()
            _drifted(
                decided,
                PACKAGE_MANAGER,
                path,
                Severity.HIGH,
                T_PACKAGE_MANAGER,
                title=f"Package manager {manager} run in a running container of {decided.ctx.workload_key}",
                new={"kind": "package_manager", "manager": manager, "command": command},
                why=f"{command!r} installs software into a running container, which then no "
                "longer matches its image",
            )
        if not learning and path not in profile.processes:
            _new_executable(decided, features, path)
    hashed, digest = features.hashed_path, features.digest
    if not learning and hashed and digest:
        entry = profile.processes.get(hashed)
        if entry is None:
            _new_executable(decided, features, hashed)
        elif entry.hashes and digest not in entry.hashes:
            value = f"{hashed} {digest}"
            if decided.due(MODIFIED_EXECUTABLE, value):
                known = ", ".join(f"{h} ({c:,} times)" for h, c in entry.hashes.items())
                _drifted(
                    decided,
                    MODIFIED_EXECUTABLE,
                    value,
                    Severity.CRITICAL,
                    T_MODIFIED_EXECUTABLE,
                    title=f"Modified executable {hashed} in {decided.ctx.workload_key}",
                    new={
                        "kind": "hash",
                        "path": hashed,
                        "hash": digest,
                        "known_hashes": list(entry.hashes),
                    },
                    why=f"{hashed} ran with hash {digest}, never seen for it while the profile "
                    f"learned (known: {known})",
                )
    if features.write:
        for file in features.files:
            directory = binary_dir_write(file)
            if directory is None:
                continue
            writer = features.binary or "a process"
            value = f"{writer} > {directory}"
            if decided.due(BINARY_DIR_WRITE, value):
                _drifted(
                    decided,
                    BINARY_DIR_WRITE,
                    value,
                    Severity.HIGH,
                    (BINARY_DIRS[directory],),
                    title=f"{file} written in binary directory {directory} by {writer}",
                    new={
                        "kind": "binary_dir_write",
                        "path": file,
                        "directory": directory,
                        "process": writer,
                    },
                    why=f"{writer} wrote {file}: a running container does not change the programs "
                    "and libraries of its image",
                )


def _new_executable(decided: Decisions, features: Features, path: str) -> None:
    if not decided.due(NEW_EXECUTABLE, path):
        return
    writable = under(path, WRITABLE_DIRS)
    where = f", from the writable directory {writable}" if writable else ""
    profile = decided.ctx.profile
    lost = profile.overflow.get(PROCESSES, 0)
    caveat = f" ({lost:,} executables did not fit the profile's cap)" if lost else ""
    _drifted(
        decided,
        NEW_EXECUTABLE,
        path,
        Severity.CRITICAL,
        T_NEW_EXECUTABLE,
        title=f"New executable {path} in {decided.ctx.workload_key}",
        new={"kind": "executable", "path": path, "writable_dir": writable, "parent": features.parent},
        why=f"{path} was executed{where}; the image's baseline of executables does not have it{caveat}",
        compared=baseline("executables", profile.processes, decided.settings.top_n, "execs"),
    )


def _drifted(
    decided: Decisions,
    category: str,
    value: str,
    severity: Severity,
    techniques: tuple[str, ...],
    *,
    title: str,
    new: dict[str, Any],
    why: str,
    compared: tuple[dict[str, Any], str] | None = None,
) -> None:
    finding = build(
        decided.ctx,
        drift=True,
        category=category,
        value=value,
        severity=severity,
        techniques=techniques,
        score=Score(DRIFT_SCORE[category]),
        title=title,
        new=new,
        compared=compared,
        why=why,
    )
    decided.note(category, value, finding)

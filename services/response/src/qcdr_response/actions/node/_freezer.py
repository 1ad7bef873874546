"""Pausing a container without its runtime's help: the cgroup freezer, as ``docker pause`` and
``runc pause`` do. CRI has no pause call, so on containerd and CRI-O nodes the agent freezes the
container's cgroup itself: cgroup v2 ``cgroup.freeze`` (``frozen`` in ``cgroup.events``), v1
``freezer.state`` (FROZEN / THAWED).

The cgroup comes from ``/proc/<init pid>/cgroup``. In a pod the agent sees other containers'
cgroups relative to its own cgroup namespace (``/../../kubepods/...``); the host's hierarchy is
then searched (mounted at ``cgroup_root``) for the directory named after the container id
(``<id>``, ``cri-containerd-<id>.scope``, ``crio-<id>.scope``, ``docker-<id>.scope``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from qcdr_response.actions.base import ActionError

_SEARCH_DEPTH = 8
_SETTLE_S = 5.0


def _lines(proc: Path, pid: int) -> list[tuple[str, str]]:
    """(controllers, path) per line of /proc/<pid>/cgroup; a path keeps its exact bytes
    (surrogate escapes), it is looked up below the cgroup root."""
    out = []
    for line in os.fsdecode((proc / str(pid) / "cgroup").read_bytes()).splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        out.append((controllers, path))
    return out


def _search(base: Path, container_id: str) -> Path | None:
    base_depth = len(base.parts)
    for dirpath, dirnames, _ in os.walk(base):
        here = Path(dirpath)
        if container_id in here.name:
            return here
        if len(here.parts) - base_depth >= _SEARCH_DEPTH:
            dirnames.clear()
    return None


def freezer_dir(proc: Path, cgroup_root: Path, pid: int, container_id: str) -> tuple[Path, int]:
    """(the container's freezer cgroup directory, cgroup version)."""
    lines = _lines(proc, pid)
    v1 = next((path for controllers, path in lines if "freezer" in controllers.split(",")), None)
    if v1 is not None:
        base, version, relative = cgroup_root / "freezer", 1, v1
    else:
        unified = next((path for controllers, path in lines if controllers == ""), None)
        if unified is None:
            raise ActionError(f"PID {pid}: no freezer cgroup (neither cgroup v1 freezer nor v2)")
        base, version, relative = cgroup_root, 2, unified
    direct = base / relative.lstrip("/")
    if ".." not in Path(relative).parts and container_id in relative and direct.is_dir():
        return direct, version
    found = _search(base, container_id)
    if found is None:
        raise ActionError(f"container {container_id[:12]}: its cgroup is not under {base}")
    return found, version


def frozen(directory: Path, version: int) -> bool:
    if version == 2:
        events = (directory / "cgroup.events").read_text().split()
        return "frozen" in events and events[events.index("frozen") + 1] == "1"
    return (directory / "freezer.state").read_text().strip() == "FROZEN"


def set_frozen(directory: Path, version: int, freeze: bool) -> None:
    """Freeze or thaw, then wait until the kernel says it is done (a few ms, bounded)."""
    if version == 2:
        (directory / "cgroup.freeze").write_text("1" if freeze else "0")
    else:
        (directory / "freezer.state").write_text("FROZEN" if freeze else "THAWED")
    deadline = time.monotonic() + _SETTLE_S
    while frozen(directory, version) != freeze:
        if time.monotonic() > deadline:
            raise ActionError(
                f"{directory}: still {'thawed' if freeze else 'frozen'} after {_SETTLE_S:.0f} s"
            )
        time.sleep(0.01)

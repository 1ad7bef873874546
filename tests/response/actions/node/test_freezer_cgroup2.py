"""The cgroup v2 freezer on the running kernel: a ticking process in a cgroup v2 directory named
as containerd names a container's scope is frozen (it stops ticking, ``cgroup.events`` says
``frozen 1``) and thawed again through ``_freezer``, as the node agent pauses containers on
containerd and CRI-O nodes with cgroup v2.

The host's hierarchy is real (the unified hierarchy of a hybrid host, a cgroup v2 host's root, or
one mounted for the test); only ``/proc/<pid>/cgroup`` is written by the test, in the one-line
form a cgroup v2 host shows, so the v2 path is taken even on a host whose processes also sit in
v1 hierarchies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from qcdr_response.actions.node import _freezer

from tests.response.actions.node.conftest import wait_for

CID = "c2" * 32


def _cgroup2_mounts() -> list[Path]:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return [Path(fields[1]) for fields in (line.split() for line in mounts) if fields[2] == "cgroup2"]


@pytest.fixture
def cgroup2(tmp_path: Path) -> Iterator[Path]:
    """A writable cgroup v2 hierarchy: one already mounted, else one mounted here (root only)."""
    mounted_here: Path | None = None
    candidates = _cgroup2_mounts()
    if not candidates:
        target = tmp_path / "cgroup2"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "cgroup2", "none", str(target)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"no cgroup v2 hierarchy here and mounting one failed: {done.stderr.strip()}")
        candidates, mounted_here = [target], target
    for root in candidates:
        if os.access(root, os.W_OK) and (root / "cgroup.procs").exists():
            yield root
            break
    else:
        pytest.skip(f"no writable cgroup v2 hierarchy (found {[str(c) for c in candidates]})")
    if mounted_here is not None:
        subprocess.run(["umount", str(mounted_here)], check=False)


@pytest.fixture
def scope(cgroup2: Path) -> Iterator[Path]:
    """A pod and container scope as containerd's systemd driver lays them out, removed after."""
    pod = cgroup2 / f"qcdr-test-{uuid.uuid4().hex[:8]}.slice"
    directory = pod / f"cri-containerd-{CID}.scope"
    try:
        directory.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {cgroup2}: {exc}")
    yield directory
    for path in (directory, pod):
        with contextlib.suppress(OSError):
            path.rmdir()


@pytest.fixture
def ticking(scope: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(pid, ticks file) of a shell loop living in ``scope``."""
    ticks = tmp_path / "ticks"
    proc = subprocess.Popen(["sh", "-c", f"while :; do echo tick >> {ticks}; sleep 0.05; done"])
    try:
        try:
            (scope / "cgroup.procs").write_text(str(proc.pid))
        except OSError as exc:
            pytest.skip(f"cannot move a process into {scope}: {exc}")
        wait_for(lambda: _count(ticks) > 0, "the loop to tick")
        yield proc.pid, ticks
    finally:
        with contextlib.suppress(OSError):
            (scope / "cgroup.freeze").write_text("0")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # the loop's last `sleep` may outlive the shell for a moment; the scope empties with it
        deadline = time.monotonic() + 5
        while (scope / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            for pid in (scope / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.05)


def _count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _fake_proc(root: Path, pid: int, line: str) -> Path:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cgroup").write_text(line + "\n")
    return root


@pytest.mark.parametrize("seen_from", ["host", "another cgroup namespace"])
def test_freeze_and_thaw_a_cgroup_v2_scope(
    cgroup2: Path, scope: Path, ticking: tuple[int, Path], tmp_path: Path, seen_from: str
) -> None:
    pid, ticks = ticking
    relative = "/" + str(scope.relative_to(cgroup2))
    if seen_from != "host":
        # what an agent in its own cgroup namespace reads for another pod's container
        relative = "/../.." + relative
    proc = _fake_proc(tmp_path / "proc", pid, f"0::{relative}")

    directory, version = _freezer.freezer_dir(proc, cgroup2, pid, CID)
    assert (directory, version) == (scope, 2)
    assert _freezer.frozen(directory, version) is False

    _freezer.set_frozen(directory, version, True)
    assert _freezer.frozen(directory, version) is True
    before = _count(ticks)
    time.sleep(0.3)  # a running loop would tick six times meanwhile
    assert _count(ticks) == before

    _freezer.set_frozen(directory, version, False)
    assert _freezer.frozen(directory, version) is False
    wait_for(lambda: _count(ticks) > before, "the loop to tick again")

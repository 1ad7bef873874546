"""kill_process by host PID: cgroup and start-time checks before a signal sent through a pidfd."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from qcdr_common.contracts.actions.v1 import ActionOutcome
from qcdr_response.actions.base import ActionError, InvalidRequestError, TargetGoneError
from qcdr_response.actions.node import _procfs
from qcdr_response.actions.node._context import NodeContext

from tests.response.actions.node.conftest import (
    RunPod,
    host_pid,
    init_pid,
    make_request,
    node_actions,
    status,
    wait_for,
)

PROC = Path("/proc")
SCRIPT = "sleep 1001 & sleep 1002 & wait"
kill = node_actions().get("kill_process")


def alive(pid: int, ticks: int) -> bool:
    try:
        st = _procfs.read_stat(PROC, pid)
    except ProcessLookupError:
        return False
    return st.start_ticks == ticks and st.state not in ("Z", "X")


def ticks(pid: int) -> int:
    return _procfs.read_stat(PROC, pid).start_ticks


@pytest.fixture
def host_process() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


async def test_kills_a_process_inside_by_host_pid(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod(SCRIPT)
    pid = host_pid(container, ["sleep", "1001"])
    other = host_pid(container, ["sleep", "1002"])
    start = ticks(pid)
    assert pid != init_pid(container)
    request = make_request("kill_process", container, pid=pid, pid_start_ticks=start)
    assert await kill.present(node_ctx, request) is False

    dry = await kill.execute(
        node_ctx, make_request("kill_process", container, pid=pid, pid_start_ticks=start, dry_run=True)
    )
    assert dry.outcome is ActionOutcome.DRY_RUN
    assert dry.details["comm"] == "sleep"
    assert alive(pid, start)

    done = await kill.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    assert done.details["signal"] == "KILL"
    assert done.details["exited"] is True
    wait_for(lambda: not alive(pid, start), f"PID {pid} to die")
    assert alive(other, ticks(other))  # only the one process
    assert status(container) == "running"
    assert await kill.present(node_ctx, request) is True
    with pytest.raises(TargetGoneError):  # the same request again: the process is gone
        await kill.execute(node_ctx, request)


async def test_kills_a_process_whose_name_is_not_utf8(node_ctx: NodeContext, run_pod: RunPod) -> None:
    """A process names itself (comm) with any bytes: \\xff\\xfe made /proc/<pid>/stat
    undecodable and the process unkillable. Its name is reported as escaped text."""
    # a child shell renames itself and loops (its sleeps are other processes)
    container = run_pod(r"""sh -c 'printf "\377\376" > /proc/self/comm; while :; do sleep 1; done' & wait""")
    found: list[int] = []

    def renamed() -> bool:
        for pid in _procfs.container_pids(PROC, str(container.id)):
            try:
                if (PROC / str(pid) / "comm").read_bytes() == b"\xff\xfe\n":
                    found.append(pid)
                    return True
            except OSError:
                continue
        return False

    wait_for(renamed, "the renamed process")
    pid = found[0]
    start = int((PROC / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[19])
    done = await kill.execute(
        node_ctx, make_request("kill_process", container, pid=pid, pid_start_ticks=start)
    )
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    assert (done.details["comm"], done.message) == ("\\xff\\xfe", f"sent SIGKILL to PID {pid} (\\xff\\xfe)")
    wait_for(lambda: not alive(pid, start), f"PID {pid} to die")


async def test_start_time_as_a_wall_clock(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod(SCRIPT)
    pid = host_pid(container, ["sleep", "1001"])
    start = ticks(pid)
    started = _procfs.start_time(PROC, start)
    off = make_request("kill_process", container, pid=pid, pid_start_time=started - timedelta(seconds=30))
    with pytest.raises(TargetGoneError, match="reused PID"):
        await kill.execute(node_ctx, off)
    assert alive(pid, start)
    near = make_request(
        "kill_process",
        container,
        pid=pid,
        pid_start_time=started + timedelta(milliseconds=700),
        parameters={"signal": "TERM"},
    )
    done = await kill.execute(node_ctx, near)
    assert done.outcome is ActionOutcome.SUCCEEDED
    assert done.details["signal"] == "TERM"
    wait_for(lambda: not alive(pid, start), f"PID {pid} to end on SIGTERM")


async def test_wrong_start_time_is_a_reused_pid(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod(SCRIPT)
    pid = host_pid(container, ["sleep", "1001"])
    start = ticks(pid)
    request = make_request("kill_process", container, pid=pid, pid_start_ticks=start + 1)
    with pytest.raises(TargetGoneError, match="reused PID"):
        await kill.execute(node_ctx, request)
    assert alive(pid, start)


async def test_pid_of_another_container_is_refused(node_ctx: NodeContext, run_pod: RunPod) -> None:
    target, other = run_pod(SCRIPT), run_pod(SCRIPT, pod="web-2")
    pid = host_pid(other, ["sleep", "1001"])
    start = ticks(pid)
    request = make_request("kill_process", target, pid=pid, pid_start_ticks=start)
    with pytest.raises(TargetGoneError, match="not a process of container"):
        await kill.execute(node_ctx, request)
    with pytest.raises(TargetGoneError):
        await kill.execute(
            node_ctx, make_request("kill_process", target, pid=pid, pid_start_ticks=start, dry_run=True)
        )
    assert alive(pid, start)


async def test_host_process_is_refused(
    node_ctx: NodeContext, run_pod: RunPod, host_process: subprocess.Popen[bytes]
) -> None:
    container = run_pod(SCRIPT)
    start = ticks(host_process.pid)
    request = make_request("kill_process", container, pid=host_process.pid, pid_start_ticks=start)
    with pytest.raises(TargetGoneError, match="not a process of container"):
        await kill.execute(node_ctx, request)
    assert host_process.poll() is None


async def test_the_agent_itself_is_refused(node_ctx: NodeContext, run_pod: RunPod) -> None:
    import os

    container = run_pod(SCRIPT)
    pid = os.getpid()
    with pytest.raises(ActionError):
        await kill.execute(
            node_ctx, make_request("kill_process", container, pid=pid, pid_start_ticks=ticks(pid))
        )


async def test_container_init_needs_a_parameter(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod(SCRIPT)
    pid = init_pid(container)
    start = ticks(pid)
    with pytest.raises(ActionError, match="allow_container_init"):
        await kill.execute(node_ctx, make_request("kill_process", container, pid=pid, pid_start_ticks=start))
    assert alive(pid, start)
    request = make_request(
        "kill_process", container, pid=pid, pid_start_ticks=start, parameters={"allow_container_init": True}
    )
    done = await kill.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED
    wait_for(lambda: status(container) == "exited", "the container to exit")


def test_a_start_time_is_required() -> None:
    request = make_request("kill_process", None, container_id="a" * 64, pid=1234)
    with pytest.raises(InvalidRequestError, match="pid_start_ticks or pid_start_time"):
        kill.check(request.target, kill.parse_params({}))
    with pytest.raises(InvalidRequestError, match="signal"):
        kill.parse_params({"signal": "HUP"})

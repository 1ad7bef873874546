"""``kill_process``: signal one process of a container by its host PID, never a look-alike.

Order matters. A pidfd is opened first: it pins the process, so the checks that follow are about
the very process that will get the signal. Then ``/proc/<pid>/cgroup`` must name the target
container and the start time in ``/proc/<pid>/stat`` must be the one the finding recorded (ticks
after boot, or a wall time within the tolerance ``btime`` and ``CLK_TCK`` allow). If the PID was
reused since, one of these differs and the action is skipped (``TargetGoneError``). The signal
goes through the pidfd, so it cannot reach a process that took the PID after the checks.
"""

from __future__ import annotations

import os
import select
import signal
from contextlib import suppress
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionRequest, ActionTarget

from qcdr_response.actions.base import Action, ActionError, Done, InvalidRequestError, Scope, TargetGoneError
from qcdr_response.actions.node import _procfs
from qcdr_response.actions.node._context import NodeContext, blocking, load, require_running
from qcdr_response.actions.registry import ACTIONS

SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}
EXIT_WAIT_S = 2.0


class KillParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: Literal["KILL", "TERM"] = "KILL"
    # PID 1 of the container ends the container (kubelet restarts it): only when asked
    allow_container_init: bool = False


def verify(ctx: NodeContext, target: ActionTarget, container_id: str) -> _procfs.ProcStat:
    """The process at ``target.pid`` is in the container and started when the finding said;
    ``TargetGoneError`` otherwise."""
    pid = cast(int, target.pid)
    try:
        if not _procfs.in_container(ctx.proc_root, pid, container_id):
            raise TargetGoneError(f"PID {pid} is not a process of container {container_id[:12]}")
        st = _procfs.read_stat(ctx.proc_root, pid)
    except ProcessLookupError:
        raise TargetGoneError(f"PID {pid} does not exist (any more)") from None
    if target.pid_start_ticks is not None:
        if st.start_ticks != target.pid_start_ticks:
            raise TargetGoneError(
                f"PID {pid} started at tick {st.start_ticks}, not {target.pid_start_ticks}: a reused PID"
            )
    elif target.pid_start_time is not None:
        started = _procfs.start_time(ctx.proc_root, st.start_ticks)
        if abs(started - target.pid_start_time) > _procfs.start_time_tolerance():
            raise TargetGoneError(
                f"PID {pid} started at {started.isoformat()}, not {target.pid_start_time.isoformat()}: "
                "a reused PID"
            )
    if st.state in ("Z", "X"):
        raise TargetGoneError(f"PID {pid} has already exited")
    return st


def _wait_exit(pidfd: int, timeout_s: float) -> bool:
    """A pidfd becomes readable when its process exits."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(int(timeout_s * 1000)))


class KillProcess(Action[NodeContext]):
    name = "kill_process"
    scope = Scope.NODE
    description = "Signal (KILL or TERM) one process of the container by host PID, checked against reuse."
    requires = ("container_id", "pid")
    params = KillParams
    permissions = ("hostPID", "CAP_KILL", "CAP_SYS_PTRACE (read other users' /proc entries)")

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        if target.pid_start_ticks is None and target.pid_start_time is None:
            raise InvalidRequestError(f"{self.name} needs pid_start_ticks or pid_start_time (no PID reuse)")

    async def present(self, ctx: NodeContext, request: ActionRequest) -> bool:
        box = await load(ctx, request.target)
        try:
            verify(ctx, request.target, box.id)
        except TargetGoneError:
            return True  # the process the finding named is gone: killed (or exited anyway)
        return False

    async def execute(self, ctx: NodeContext, request: ActionRequest) -> Done:
        p = cast(KillParams, self.parse_params(request.parameters))
        self.check(request.target, p)
        target = request.target
        pid = cast(int, target.pid)
        box = await load(ctx, target)
        require_running(box)
        if pid == ctx.own_pid:
            raise ActionError("the node agent does not signal itself")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise TargetGoneError(f"PID {pid} does not exist (any more)") from None
        try:
            st = verify(ctx, target, box.id)
            if pid == box.init_pid and not p.allow_container_init:
                raise ActionError(
                    f"PID {pid} is the container's init (PID 1 inside): set allow_container_init to kill it"
                )
            details = {**box.describe(), "pid": pid, "comm": st.comm, "start_ticks": st.start_ticks}
            details["signal"] = p.signal
            if request.dry_run:
                return Done(
                    ActionOutcome.DRY_RUN, f"would send SIG{p.signal} to PID {pid} ({st.comm})", details
                )
            try:
                signal.pidfd_send_signal(pidfd, SIGNALS[p.signal])
            except ProcessLookupError:
                raise TargetGoneError(f"PID {pid} exited before the signal") from None
            details["exited"] = await blocking(_wait_exit, pidfd, EXIT_WAIT_S if p.signal == "KILL" else 0.2)
            return Done(ActionOutcome.SUCCEEDED, f"sent SIG{p.signal} to PID {pid} ({st.comm})", details)
        finally:
            with suppress(OSError):
                os.close(pidfd)


ACTIONS.add(KillProcess.name, KillProcess(), __name__)

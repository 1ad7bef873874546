"""Reading ``/proc`` (the host's: the agent runs with ``hostPID``): process start times, cgroup
membership, the processes of a container, and the sockets they hold. Never ``environ``.

Everything is read as bytes: a process chooses its own name (``comm``), command line, executable
and socket paths, none of them need be UTF-8. What is reported is ``_text()`` (bytes that are not
UTF-8 shown as ``\\xNN``, so it always serialises); cgroup paths, which are looked up again,
keep their exact bytes as surrogate escapes."""

from __future__ import annotations

import os
import re
import socket
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)")
_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}
_MAX_CMDLINE = 4096


def _text(raw: bytes) -> str:
    """Bytes a process chose, as text for a report: what is not UTF-8 appears as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    start_ticks: int  # field 22: clock ticks after boot


def read_stat(proc: Path, pid: int) -> ProcStat:
    """``/proc/<pid>/stat``; ``ProcessLookupError`` when there is no such process."""
    try:
        raw = (proc / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(pid) from None
    # comm may hold spaces and parentheses (and any byte but NUL): it ends at the last ')'
    comm = _text(raw[raw.index(b"(") + 1 : raw.rindex(b")")])
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); field N is fields[N - 3]
    return ProcStat(
        pid=pid, comm=comm, state=fields[0].decode(), ppid=int(fields[1]), start_ticks=int(fields[19])
    )


def cgroup_text(proc: Path, pid: int) -> str:
    try:
        return os.fsdecode((proc / str(pid) / "cgroup").read_bytes())
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(pid) from None


def cgroup_container_ids(text: str) -> set[str]:
    """Container ids named in a cgroup file: ``/docker/<id>``, ``.../docker-<id>.scope``,
    ``.../cri-containerd-<id>.scope``, ``.../crio-<id>.scope``, ``/kubepods/.../<id>``."""
    ids: set[str] = set()
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        ids.update(m.group(1) for m in _CONTAINER_ID.finditer(path))
    return ids


def in_container(proc: Path, pid: int, container_id: str) -> bool:
    return container_id in cgroup_container_ids(cgroup_text(proc, pid))


def own_container_id(proc: Path) -> str | None:
    try:
        ids = cgroup_container_ids(os.fsdecode((proc / "self" / "cgroup").read_bytes()))
    except OSError:
        return None
    return next(iter(sorted(ids)), None) if len(ids) == 1 else None


def clk_tck() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def boot_time(proc: Path) -> int:
    """``btime`` of ``/proc/stat``: the boot time in whole seconds since the epoch."""
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


def start_time(proc: Path, ticks: int) -> datetime:
    return datetime.fromtimestamp(boot_time(proc), UTC) + timedelta(seconds=ticks / clk_tck())


def start_time_tolerance() -> timedelta:
    """How far a wall-clock start time may differ from the one /proc gives: ``btime`` is truncated
    to the second and the start time counted in ticks, each side of the comparison."""
    return timedelta(seconds=1.0 + 2.0 / clk_tck())


def uid_of(proc: Path, pid: int) -> int | None:
    try:
        # the status file's Name: line is the process's own choice of bytes
        for line in (proc / str(pid) / "status").read_bytes().splitlines():
            if line.startswith(b"Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_info(proc: Path, pid: int) -> dict[str, Any]:
    """One process: PID, PPID, command line, executable, start ticks, real uid (no environment)."""
    st = read_stat(proc, pid)
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()[:_MAX_CMDLINE]
        cmdline = [_text(a) for a in raw.split(b"\0") if a]
    except OSError:
        cmdline = []
    try:
        exe: str | None = _text(os.fsencode((proc / str(pid) / "exe").readlink()))
    except OSError:
        exe = None
    return {
        "pid": pid,
        "ppid": st.ppid,
        "comm": st.comm,
        "state": st.state,
        "cmdline": cmdline,
        "exe": exe,
        "start_ticks": st.start_ticks,
        "uid": uid_of(proc, pid),
    }


def container_pids(proc: Path, container_id: str) -> list[int]:
    """Every host PID whose cgroup names the container, in PID order."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if in_container(proc, int(entry.name), container_id):
                pids.append(int(entry.name))
        except (ProcessLookupError, OSError):
            continue  # exited while we looked
    return sorted(pids)


def socket_inodes(proc: Path, pid: int) -> dict[int, list[int]]:
    """``{socket inode: [fd, ...]}`` of a process's open file descriptors."""
    found: dict[int, list[int]] = {}
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            link = str(fd.readlink())
        except OSError:
            continue
        if link.startswith("socket:["):
            found.setdefault(int(link[8:-1]), []).append(int(fd.name))
    return found


def _addr(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    # the kernel prints the address as 32-bit words in host (little-endian) order
    words = b"".join(struct.pack("<I", struct.unpack(">I", raw[i : i + 4])[0]) for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(port, 16)


def net_sockets(proc: Path, pid: int) -> list[dict[str, Any]]:
    """The sockets of ``pid``'s network namespace (TCP, UDP over IPv4/6, and unix sockets)."""
    sockets: list[dict[str, Any]] = []
    net = proc / str(pid) / "net"
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = (net / proto).read_bytes().decode("ascii", "replace").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            (lhost, lport), (rhost, rport) = _addr(f[1]), _addr(f[2])
            sockets.append(
                {
                    "proto": proto,
                    "local": f"{lhost}:{lport}" if ":" not in lhost else f"[{lhost}]:{lport}",
                    "remote": f"{rhost}:{rport}" if ":" not in rhost else f"[{rhost}]:{rport}",
                    "state": _TCP_STATES.get(f[3], f[3]) if proto.startswith("tcp") else f[3],
                    "uid": int(f[7]),
                    "inode": int(f[9]),
                }
            )
    try:
        unix = (net / "unix").read_bytes().splitlines()[1:]
    except OSError:
        unix = []
    for raw in unix:
        # a socket's path is whatever bytes it was bound to, spaces included: the rest of the line
        u = raw.split(None, 7)
        path = _text(u[7]) if len(u) > 7 else None
        sockets.append({"proto": "unix", "path": path, "state": u[5].decode(), "inode": int(u[6])})
    return sockets

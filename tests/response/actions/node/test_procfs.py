"""What the node actions read from /proc, on fixed inputs: cgroup layouts of the runtimes, socket
tables, stat lines with awkward command names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from qcdr_response.actions.node import _procfs

CID = "f622126c6b2e030ab29264ba5334f8cedd6358d928ea500d7f553b03df917451"


@pytest.mark.parametrize(
    "text",
    [
        f"12:pids:/docker/{CID}\n0::/docker/{CID}\n",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-{CID}.scope\n",
        f"0::/system.slice/docker-{CID}.scope\n",
        f"0::/kubepods.slice/kubepods-besteffort.slice/crio-{CID}.scope\n",
        f"4:memory:/kubepods/burstable/pod0d5b9f8e-1c1a-4a8e-9f5e-2a1b3c4d5e6f/{CID}\n",
        f"0::/docker/{CID}/init.scope\n",
    ],
)
def test_cgroup_layouts_name_the_container(text: str) -> None:
    assert _procfs.cgroup_container_ids(text) == {CID}


@pytest.mark.parametrize(
    "text",
    [
        "0::/\n",
        "0::/user.slice/user-1000.slice/session-2.scope\n",
        f"0::/docker/{CID[:-1]}\n",  # 63 characters: not an id
        f"0::/docker/{CID}x\n",
    ],
)
def test_other_cgroups_name_no_container(text: str) -> None:
    assert _procfs.cgroup_container_ids(text) == set()


def test_stat_with_an_awkward_command_name(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    fields = ["S", "7", *["0"] * 17, "123456", *["0"] * 10]
    (tmp_path / "42" / "stat").write_text(f"42 (evil) (x y) {' '.join(fields)}\n")
    st = _procfs.read_stat(tmp_path, 42)
    assert (st.comm, st.state, st.ppid, st.start_ticks) == ("evil) (x y", "S", 7, 123456)
    with pytest.raises(ProcessLookupError):
        _procfs.read_stat(tmp_path, 43)


def test_socket_tables(tmp_path: Path) -> None:
    net = tmp_path / "9" / "net"
    net.mkdir(parents=True)
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    )
    (net / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 0200000A:D431 01 00000000:00000000 00:00000000 00000000  1000        0 555 1\n"
    )
    (net / "tcp6").write_text(
        header
        + "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A"
        + " 00000000:00000000 00:00000000 00000000     0        0 556 1\n"
    )
    (net / "unix").write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 557 /run/app.sock\n"
    )
    sockets = {s["inode"]: s for s in _procfs.net_sockets(tmp_path, 9)}
    assert sockets[555] == {
        "proto": "tcp",
        "local": "127.0.0.1:8080",
        "remote": "10.0.0.2:54321",
        "state": "ESTABLISHED",
        "uid": 1000,
        "inode": 555,
    }
    assert (sockets[556]["local"], sockets[556]["state"]) == ("[::]:80", "LISTEN")
    assert sockets[557]["path"] == "/run/app.sock"


def test_own_process() -> None:
    me = _procfs.process_info(Path("/proc"), os.getpid())
    assert me["pid"] == os.getpid()
    assert me["ppid"] == os.getppid()
    assert me["cmdline"]
    assert _procfs.start_time_tolerance().total_seconds() > 1

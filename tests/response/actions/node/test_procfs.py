"""What the node actions read from /proc, on fixed inputs: cgroup layouts of the runtimes, socket
tables, stat lines with awkward command names."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from qcdr_response.actions.node import _freezer, _procfs

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


def test_names_that_are_not_utf8_are_reported_as_escaped_text(tmp_path: Path) -> None:
    """A process chooses its own name, command line, executable and socket paths: bytes that are
    not UTF-8 (a process can set comm to \\xff\\xfe) are reported as \\xNN text, never a
    UnicodeDecodeError (which made the process unkillable and its container's forensics fail)."""
    (tmp_path / "42" / "net").mkdir(parents=True)
    fields = ["S", "7", *["0"] * 17, "123456", *["0"] * 10]
    (tmp_path / "42" / "stat").write_bytes(b"42 (\xff\xfe) " + " ".join(fields).encode() + b"\n")
    (tmp_path / "42" / "status").write_bytes(b"Name:\t\xff\xfe\nUid:\t1000\t1000\t1000\t1000\n")
    (tmp_path / "42" / "cmdline").write_bytes(b"\xff\xfe\0-x\0")
    (tmp_path / "42" / "cgroup").write_bytes(f"0::/\xff/docker-{CID}.scope\n".encode("latin-1"))
    (tmp_path / "42" / "exe").symlink_to(os.fsdecode(b"/tmp/\xff"))
    (tmp_path / "42" / "net" / "unix").write_bytes(
        b"Num       RefCount Protocol Flags    Type St Inode Path\n"
        b"0000000000000000: 00000002 00000000 00010000 0001 01 557 /run/\xff app.sock\n"
    )
    info = _procfs.process_info(tmp_path, 42)
    assert (info["comm"], info["cmdline"], info["exe"], info["uid"]) == (
        "\\xff\\xfe",
        ["\\xff\\xfe", "-x"],
        "/tmp/\\xff",
        1000,
    )
    (sock,) = _procfs.net_sockets(tmp_path, 42)
    assert sock["path"] == "/run/\\xff app.sock"  # the whole path, its space too
    orjson.dumps([info, sock])  # plain text: serialises
    assert _procfs.in_container(tmp_path, 42, CID)


def test_a_cgroup_path_that_is_not_utf8_is_found_by_its_exact_bytes(tmp_path: Path) -> None:
    """The freezer looks the cgroup path of /proc/<pid>/cgroup up below the cgroup root: the
    exact bytes, not a decoding of them."""
    (tmp_path / "proc" / "42").mkdir(parents=True)
    line = b"0::/kubepods/\xff/cri-containerd-" + CID.encode() + b".scope\n"
    (tmp_path / "proc" / "42" / "cgroup").write_bytes(line)
    scope = tmp_path / "cg" / os.fsdecode(line[4:-1])
    scope.mkdir(parents=True)
    assert _freezer.freezer_dir(tmp_path / "proc", tmp_path / "cg", 42, CID) == (scope, 2)


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

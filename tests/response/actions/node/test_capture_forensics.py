"""capture_forensics: a content-addressed bundle whose manifest hashes match its blobs, with the
container's processes, sockets, chosen files and redacted metadata; dry-run writes nothing."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

from docker.models.containers import Container
from qcdr_common.contracts.actions.v1 import ActionOutcome
from qcdr_response.actions.node import _procfs
from qcdr_response.actions.node._context import NodeContext

from tests.response.actions.node.conftest import (
    RunPod,
    container_root,
    host_pid,
    make_request,
    node_actions,
    wait_for,
)

SECRET = "hunter2-s3cr3t-value"
SCRIPT = " && ".join(
    [
        "printf 'stage two' > /tmp/drop.bin",
        "dd if=/dev/zero of=/tmp/large.bin bs=1024 count=8 2>/dev/null",
        "ln -s /etc/passwd /tmp/passwd-link",
        "(nc -l -p 8080 &)",
        "(sleep 1003 &)",
        "touch /tmp/ready",
        "exec sleep 600",
    ]
)
forensics = node_actions().get("capture_forensics")
PROC = Path("/proc")


def listening(container: Container) -> bool:
    """busybox nc listens on [::]:8080 (IPv6, dual stack)."""
    net = container_root(container).parent / "net"
    return any(":1F90 " in (net / t).read_text() for t in ("tcp", "tcp6"))


def load_bundle(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / "manifest.json").read_bytes())
    return manifest


async def test_bundle(node_ctx: NodeContext, run_pod: RunPod) -> None:
    pod = run_pod(SCRIPT, environment={"API_TOKEN": SECRET, "MODE": "prod"}, ready="/tmp/ready")
    wait_for(lambda: listening(pod), "nc to listen on 8080")
    nc_pid = host_pid(pod, ["nc", "-l", "-p", "8080"])
    params = {
        "paths": ["/tmp/drop.bin", "/tmp/large.bin", "/tmp/passwd-link", "/tmp/none"],
        "max_file_bytes": 1024,
    }
    request = make_request("capture_forensics", pod, parameters=params, reason="T1071 beacon")
    done = await forensics.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message

    bundle = Path(done.details["bundle"])
    bundle_id = done.details["bundle_id"]
    assert bundle == node_ctx.forensics_root / bundle_id
    body = (bundle / "manifest.json").read_bytes()
    assert hashlib.sha256(body).hexdigest() == bundle_id  # content-addressed
    manifest = load_bundle(bundle)
    blobs = {p.name: p for p in (bundle / "blobs").iterdir()}
    assert set(blobs) == set(manifest["blobs"])
    for name, blob in blobs.items():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == name
        assert blob.stat().st_size == manifest["blobs"][name]
        assert stat.S_IMODE(blob.stat().st_mode) == 0o600

    assert manifest["action_id"] == request.action_id
    assert manifest["reason"] == "T1071 beacon"
    container = manifest["container"]
    assert (container["container_id"], container["namespace"], container["pod"]) == (pod.id, "shop", "web-1")
    assert sorted(container["env_keys"]) == ["API_TOKEN", "MODE"]

    # processes: PID, PPID, command line, executable, start ticks, uid
    procs = {p["pid"]: p for p in manifest["processes"]}
    assert procs[nc_pid]["cmdline"] == ["nc", "-l", "-p", "8080"]
    assert procs[nc_pid]["exe"] == "/bin/busybox"
    assert procs[nc_pid]["uid"] == 0
    assert procs[nc_pid]["start_ticks"] > 0
    assert any(p["cmdline"] == ["sleep", "1003"] for p in procs.values())
    assert all(set(p) >= {"pid", "ppid", "cmdline", "exe", "start_ticks", "uid"} for p in procs.values())

    # sockets: the listener, with the process that holds it
    (listener,) = [s for s in manifest["sockets"] if s["local"] in ("0.0.0.0:8080", "[::]:8080")]
    assert listener["proto"] in ("tcp", "tcp6")
    assert listener["state"] == "LISTEN"
    assert [o["pid"] for o in listener["owners"]] == [nc_pid]

    # files: hashed whole, kept up to max_file_bytes, confined like quarantine
    files = {f["path"]: f for f in manifest["files"]}
    drop = files["/tmp/drop.bin"]
    assert drop["sha256"] == hashlib.sha256(b"stage two").hexdigest() == drop["blob"]
    assert blobs[drop["blob"]].read_bytes() == b"stage two"
    assert drop["truncated"] is False
    large = files["/tmp/large.bin"]
    assert (large["size"], large["stored_bytes"], large["truncated"]) == (8192, 1024, True)
    assert large["sha256"] == hashlib.sha256(b"\0" * 8192).hexdigest()
    assert blobs[large["blob"]].read_bytes() == b"\0" * 1024
    assert "leads to /etc/passwd" in files["/tmp/passwd-link"]["error"]
    assert "does not exist" in files["/tmp/none"]["error"]

    # metadata: inspect with every environment value redacted; no environ anywhere
    inspect = json.loads(blobs[container["inspect_blob"]].read_bytes())
    assert inspect["Id"] == pod.id
    assert "API_TOKEN=<redacted>" in inspect["Config"]["Env"]
    check_files(bundle)


def check_files(bundle: Path) -> None:
    """Owner-only everywhere, and the secret environment value nowhere."""
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    for path in bundle.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o600 if path.is_file() else 0o700), path
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# a process named \xff\xfe, one running an executable under /tmp/\xff, and a link to a file
# named \xfe: names a process or an intruder chooses, none of them UTF-8
ODD_NAMES = " && ".join(
    [
        r"""(sh -c 'printf "\377\376" > /proc/self/comm; while :; do sleep 1; done' &)""",
        r"""mkdir "/tmp/$(printf '\377')" && cp /bin/busybox "/tmp/$(printf '\377')/sleep" """,
        r"""("/tmp/$(printf '\377')/sleep" 1006 &)""",
        r"""printf payload > "/tmp/$(printf '\376')" && ln -s "/tmp/$(printf '\376')" /tmp/link""",
        "touch /tmp/ready",
        "exec sleep 600",
    ]
)


async def test_names_that_are_not_utf8_are_in_the_bundle_as_escaped_text(
    node_ctx: NodeContext, run_pod: RunPod
) -> None:
    """One such name made the whole capture fail (a UnicodeDecodeError reading /proc, or a
    surrogate escape canonical_json cannot encode): the bundle lists them as \\xNN text."""
    pod = run_pod(ODD_NAMES, ready="/tmp/ready")

    def started() -> bool:
        found = read_all(pod, "comm") + read_all(pod, "cmdline")
        return b"\xff\xfe\n" in found and b"1006\0" in b"".join(found)

    wait_for(started, "the oddly named processes")
    request = make_request("capture_forensics", pod, parameters={"paths": ["/tmp/link"]})
    done = await forensics.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    manifest = load_bundle(Path(done.details["bundle"]))
    procs = manifest["processes"]
    assert any(p["comm"] == "\\xff\\xfe" for p in procs), procs
    assert any(p["exe"] == "/tmp/\\xff/sleep" and p["cmdline"][1:] == ["1006"] for p in procs), procs
    (link,) = manifest["files"]
    assert (link["path"], link["resolved_path"]) == ("/tmp/link", "/tmp/\\xfe")
    assert link["sha256"] == hashlib.sha256(b"payload").hexdigest()


def read_all(container: Container, name: str) -> list[bytes]:
    """/proc/<pid>/<name> of each process of the container."""
    found = []
    for pid in _procfs.container_pids(PROC, str(container.id)):
        try:
            found.append((PROC / str(pid) / name).read_bytes())
        except OSError:
            continue
    return found


async def test_dry_run_writes_nothing(node_ctx: NodeContext, run_pod: RunPod) -> None:
    pod = run_pod(SCRIPT, ready="/tmp/ready")
    params = {"paths": ["/tmp/drop.bin"]}
    done = await forensics.execute(
        node_ctx, make_request("capture_forensics", pod, parameters=params, dry_run=True)
    )
    assert done.outcome is ActionOutcome.DRY_RUN
    assert done.details["processes"] >= 2
    assert done.details["files"] == [
        {
            "path": "/tmp/drop.bin",
            "resolved_path": "/tmp/drop.bin",
            "mode": 0o644,
            "uid": 0,
            "gid": 0,
            "size": 9,
        }
        | {"mtime": done.details["files"][0]["mtime"]}
    ]
    assert not node_ctx.forensics_root.exists()


def test_paths_are_checked_before_anything_runs() -> None:
    from qcdr_response.actions.base import InvalidRequestError

    target = make_request("capture_forensics", None, container_id="a" * 64).target
    for paths in (["/etc/shadow"], ["/tmp/../etc/shadow"], ["relative"]):
        try:
            forensics.check(target, forensics.parse_params({"paths": paths}))
        except InvalidRequestError:
            continue
        raise AssertionError(f"{paths} was accepted")

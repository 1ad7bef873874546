"""quarantine_file through /proc/<pid>/root: copy, metadata, removal, restore by undo, and every
way out of the container's allowed roots refused."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import orjson
import pytest
from docker.models.containers import Container
from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome
from qcdr_response.actions.base import ActionError, InvalidRequestError, TargetGoneError
from qcdr_response.actions.node._context import NodeContext

from tests.response.actions.node.conftest import (
    RunPod,
    container_root,
    exists_in,
    make_request,
    node_actions,
    wait_for,
)

PAYLOAD = b"#!/bin/sh\necho pwned\n"
SETUP = " && ".join(
    [
        "mkdir -p /tmp/dir /app/sub",
        "printf '#!/bin/sh\\necho pwned\\n' > /tmp/payload.sh",
        "chown 1000:1001 /tmp/payload.sh",
        "chmod 750 /tmp/payload.sh",
        "ln -s /etc/passwd /tmp/abs-link",
        "ln -s ../../../../../../../etc/passwd /tmp/rel-link",
        "ln -s /etc /tmp/etc-dir",
        "ln -s /app/sub/../../tmp/payload.sh /app/good-link",
        "dd if=/dev/zero of=/tmp/big bs=1024 count=64 2>/dev/null",
        "touch /tmp/ready",
        "exec sleep 600",
    ]
)
quarantine = node_actions().get("quarantine_file")
HOST_PASSWD = Path("/etc/passwd").read_bytes()


@pytest.fixture
def pod(run_pod: RunPod) -> Container:
    return run_pod(SETUP, ready="/tmp/ready")


@pytest.fixture(scope="module")
def unchanged_pod(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[Container]:
    """One pod for the tests that must not change it (refusals)."""
    labels = {"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "web-1"}
    container = docker_client.containers.run(
        busybox_image, ["sh", "-c", SETUP], detach=True, network_mode="none", labels=labels
    )
    wait_for(lambda: exists_in(container, "/tmp/ready"), "the pod's files")
    yield container
    container.kill()


def inside(container: Container, path: str) -> Path:
    return container_root(container) / path.lstrip("/")


async def test_quarantine_and_restore(node_ctx: NodeContext, pod: Container) -> None:
    request = make_request("quarantine_file", pod, path="/tmp/payload.sh", reason="T1059 dropper")
    assert await quarantine.present(node_ctx, request) is False
    done = await quarantine.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert done.details["sha256"] == sha
    assert not inside(pod, "/tmp/payload.sh").exists()

    kept = node_ctx.quarantine_root / sha
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    assert (kept / "content").read_bytes() == PAYLOAD
    assert stat.S_IMODE((kept / "content").stat().st_mode) == 0o600
    meta_file = kept / f"action-{request.action_id}.json"
    assert stat.S_IMODE(meta_file.stat().st_mode) == 0o600
    meta = json.loads(meta_file.read_text())
    assert meta["original_path"] == "/tmp/payload.sh"
    assert meta["container_id"] == pod.id
    assert (meta["namespace"], meta["pod"]) == ("shop", "web-1")
    assert (meta["sha256"], meta["size"], meta["mode"]) == (sha, len(PAYLOAD), 0o750)
    assert (meta["uid"], meta["gid"]) == (1000, 1001)
    assert meta["action_id"] == request.action_id
    assert meta["reason"] == "T1059 dropper"
    assert {"mtime", "quarantined_at"} <= set(meta)
    assert await quarantine.present(node_ctx, request) is True

    assert done.undo is not None
    assert await quarantine.recovered_undo(node_ctx, request) == done.undo
    undo = make_request("quarantine_file", pod, op=ActionOp.UNDO, undo=done.undo, action_id=request.action_id)
    assert await quarantine.present(node_ctx, undo) is False
    restored = await quarantine.undo(node_ctx, undo)
    assert restored.outcome is ActionOutcome.SUCCEEDED, restored.message
    back = inside(pod, "/tmp/payload.sh")
    st = back.stat()
    assert back.read_bytes() == PAYLOAD
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1001)
    assert st.st_mtime_ns == meta["mtime_ns"]
    assert await quarantine.present(node_ctx, undo) is True
    assert "restored_at" in json.loads(meta_file.read_text())
    assert pod.exec_run(["sh", "/tmp/payload.sh"]).output == b"pwned\n"


async def test_undo_does_not_replace_what_is_there_now(node_ctx: NodeContext, pod: Container) -> None:
    done = await quarantine.execute(node_ctx, make_request("quarantine_file", pod, path="/tmp/payload.sh"))
    inside(pod, "/tmp/payload.sh").write_bytes(b"new")
    undo = make_request("quarantine_file", pod, op=ActionOp.UNDO, undo=done.undo)
    with pytest.raises(ActionError, match="exists again"):
        await quarantine.undo(node_ctx, undo)
    assert inside(pod, "/tmp/payload.sh").read_bytes() == b"new"
    overwrite = make_request(
        "quarantine_file", pod, op=ActionOp.UNDO, undo=done.undo, parameters={"overwrite": True}
    )
    assert (await quarantine.undo(node_ctx, overwrite)).outcome is ActionOutcome.SUCCEEDED
    assert inside(pod, "/tmp/payload.sh").read_bytes() == PAYLOAD


async def test_a_symlink_inside_the_roots_is_followed_confined(node_ctx: NodeContext, pod: Container) -> None:
    done = await quarantine.execute(node_ctx, make_request("quarantine_file", pod, path="/app/good-link"))
    assert done.details["resolved_path"] == "/tmp/payload.sh"
    assert not inside(pod, "/tmp/payload.sh").exists()
    assert inside(pod, "/app/good-link").is_symlink()  # the link itself stays


# /tmp/link leads to a file whose name is the byte 0xff; beside it one named by the four
# characters \xff, which only looks the same
ODD = " && ".join(
    [
        r"""printf payload > "/tmp/$(printf '\377')" && ln -s "/tmp/$(printf '\377')" /tmp/link""",
        r"""printf lookalike > '/tmp/\xff'""",
        "touch /tmp/ready",
        "exec sleep 600",
    ]
)


async def test_quarantine_and_restore_through_a_link_to_a_name_that_is_not_utf8(
    node_ctx: NodeContext, run_pod: RunPod
) -> None:
    """The result reports the name as text (a surrogate escape in it could not be serialised:
    the file was gone and no result ever came); the undo record keeps the exact bytes, so undo
    puts back the very name, not its look-alike."""
    pod = run_pod(ODD, ready="/tmp/ready")
    odd, lookalike = container_root(pod) / "tmp" / os.fsdecode(b"\xff"), inside(pod, r"/tmp/\xff")
    request = make_request("quarantine_file", pod, path="/tmp/link")
    done = await quarantine.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    assert not odd.exists()
    assert lookalike.read_bytes() == b"lookalike"
    assert done.details["resolved_path"] == r"/tmp/\xff"
    assert done.message.startswith(r"quarantined /tmp/\xff ")
    assert done.undo is not None
    assert (done.undo["path"], done.undo["path_hex"]) == (r"/tmp/\xff", b"/tmp/\xff".hex())
    orjson.dumps([done.message, done.details, done.undo])  # plain text: serialises
    assert await quarantine.recovered_undo(node_ctx, request) == done.undo

    undo = make_request("quarantine_file", pod, op=ActionOp.UNDO, undo=done.undo, action_id=request.action_id)
    restored = await quarantine.undo(node_ctx, undo)
    assert restored.outcome is ActionOutcome.SUCCEEDED, restored.message
    assert odd.read_bytes() == b"payload"
    assert lookalike.read_bytes() == b"lookalike"
    assert await quarantine.present(node_ctx, undo) is True


@pytest.mark.parametrize(
    ("path_hex", "match"),
    [("zz", "non-hexadecimal"), (b"/tmp/\xfe".hex(), "does not match path"), (7, "not a string")],
)
async def test_an_undo_record_whose_bytes_disagree_is_refused(
    node_ctx: NodeContext, path_hex: object, match: str
) -> None:
    record = {"container_id": "a" * 64, "path": r"/tmp/\xff", "path_hex": path_hex}
    record |= {"sha256": "0" * 64, "mode": 0o644, "uid": 0, "gid": 0}
    request = make_request("quarantine_file", None, container_id="a" * 64, op=ActionOp.UNDO, undo=record)
    with pytest.raises(InvalidRequestError, match=f"undo record: .*{match}"):
        await quarantine.undo(node_ctx, request)


async def test_dry_run_changes_nothing(node_ctx: NodeContext, unchanged_pod: Container) -> None:
    pod = unchanged_pod
    request = make_request("quarantine_file", pod, path="/tmp/payload.sh", dry_run=True)
    done = await quarantine.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.DRY_RUN
    assert done.details["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert inside(pod, "/tmp/payload.sh").read_bytes() == PAYLOAD
    assert not node_ctx.quarantine_root.exists()


@pytest.mark.parametrize(
    ("path", "error", "match"),
    [
        ("/tmp/../etc/passwd", InvalidRequestError, "not canonical"),
        ("tmp/payload.sh", InvalidRequestError, "absolute"),
        ("/tmp//payload.sh", InvalidRequestError, "not canonical"),
        ("/etc/passwd", InvalidRequestError, "outside the allowed roots"),
        ("/proc/1/root/etc/passwd", InvalidRequestError, "outside the allowed roots"),
        ("/tmp/abs-link", ActionError, "leads to /etc/passwd"),
        ("/tmp/rel-link", ActionError, "leads to /etc/passwd"),
        ("/tmp/etc-dir/passwd", ActionError, "leads to /etc/passwd"),
        ("/tmp/dir", ActionError, "not a regular file"),
        ("/tmp", ActionError, "not a regular file"),
        ("/tmp/nothing-here", TargetGoneError, "does not exist"),
    ],
)
async def test_refusals(
    node_ctx: NodeContext, unchanged_pod: Container, path: str, error: type[Exception], match: str
) -> None:
    pod = unchanged_pod
    for dry_run in (True, False):
        with pytest.raises(error, match=match):
            await quarantine.execute(
                node_ctx, make_request("quarantine_file", pod, path=path, dry_run=dry_run)
            )
    assert inside(pod, "/tmp/payload.sh").read_bytes() == PAYLOAD
    assert inside(pod, "/etc/passwd").exists()
    assert not node_ctx.quarantine_root.exists() or not any(node_ctx.quarantine_root.iterdir())


async def test_symlinks_never_reach_the_host(node_ctx: NodeContext, unchanged_pod: Container) -> None:
    """With /etc allowed, the escaping links reach the *container's* passwd, never the host's."""
    pod = unchanged_pod
    container_passwd = inside(pod, "/etc/passwd").read_bytes()
    assert container_passwd != HOST_PASSWD
    for path in ("/tmp/abs-link", "/tmp/rel-link", "/tmp/etc-dir/passwd"):
        params = {"allowed_roots": ["/tmp", "/etc"]}
        request = make_request("quarantine_file", pod, path=path, dry_run=True, parameters=params)
        done = await quarantine.execute(node_ctx, request)
        assert done.details["resolved_path"] == "/etc/passwd"
        assert done.details["sha256"] == hashlib.sha256(container_passwd).hexdigest()


async def test_size_limit_and_roots_parameter(node_ctx: NodeContext, pod: Container) -> None:
    request = make_request("quarantine_file", pod, path="/tmp/big", parameters={"max_bytes": 1024})
    with pytest.raises(ActionError, match="over the limit"):
        await quarantine.execute(node_ctx, request)
    assert inside(pod, "/tmp/big").exists()
    node_ctx.max_quarantine_bytes = 10  # the node's ceiling wins over a larger parameter
    with pytest.raises(ActionError, match=r"over the limit of 10$"):
        await quarantine.execute(node_ctx, make_request("quarantine_file", pod, path="/tmp/payload.sh"))
    for roots in (["/"], ["tmp"], ["/tmp/../etc"]):
        with pytest.raises(InvalidRequestError, match="allowed_roots"):
            quarantine.parse_params({"allowed_roots": roots})

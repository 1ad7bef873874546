"""``capture_forensics``: a content-addressed evidence bundle of a container, taken from the node.

Under ``<forensics root>/<bundle id>/``: ``blobs/<sha256>`` (each blob named by its hash) and
``manifest.json``, whose sha256 is the bundle id. The manifest lists the container's processes
(PID, PPID, command line, executable, start ticks, uid), the sockets of its network namespace
with the processes holding them, the chosen files (resolved confined to the container's root, as
for quarantine) with their hashes and contents up to ``max_file_bytes``, and the runtime's
document of the container (``docker inspect``, or CRI status and info) with every environment
value redacted (the keys are kept). A process's ``environ`` is never read: the original tool
leaked secrets that way.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionRequest, ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import Action, ActionError, Done, Scope
from qcdr_response.actions.node import _procfs
from qcdr_response.actions.node._bundle import BundleWriter, canonical_json
from qcdr_response.actions.node._context import Box, MiB, NodeContext, blocking, load, require_running
from qcdr_response.actions.node._paths import (
    DEFAULT_ALLOWED_ROOTS,
    check_roots,
    container_root,
    resolve_allowed,
)
from qcdr_response.actions.registry import ACTIONS

FORMAT = "qcdr-forensics/1"


class ForensicsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    paths: tuple[str, ...] = Field(default=(), max_length=64, description="Files to hash and copy.")
    allowed_roots: tuple[str, ...] = Field(default=DEFAULT_ALLOWED_ROOTS, min_length=1)
    # bounded (1 TiB, far above any node's ceiling) like every integer that reaches the JSONB
    max_file_bytes: int = Field(
        default=1 * MiB, ge=0, le=MiB * MiB, description="Content kept per file (all is hashed)."
    )

    _roots = field_validator("allowed_roots")(check_roots)

    @field_validator("paths")
    @classmethod
    def _canonical(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            validation.container_path(path, "paths")
        return paths


def _processes(ctx: NodeContext, box: Box) -> list[dict[str, Any]]:
    procs = []
    for pid in _procfs.container_pids(ctx.proc_root, box.id):
        try:
            procs.append(_procfs.process_info(ctx.proc_root, pid))
        except ProcessLookupError:
            continue
    return procs


def _sockets(ctx: NodeContext, box: Box, procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    owners: dict[int, list[dict[str, Any]]] = {}
    for proc in procs:
        for inode, fds in _procfs.socket_inodes(ctx.proc_root, proc["pid"]).items():
            owners.setdefault(inode, []).append({"pid": proc["pid"], "fds": sorted(fds)})
    sockets = _procfs.net_sockets(ctx.proc_root, box.init_pid)
    seen = set()
    for sock in sockets:
        sock["owners"] = owners.get(sock["inode"], [])
        seen.add(sock["inode"])
    # sockets a process holds that the tables above do not list (netlink, packet, another netns)
    sockets += [
        {"proto": "other", "inode": i, "owners": o} for i, o in sorted(owners.items()) if i not in seen
    ]
    return sockets


def _files(
    ctx: NodeContext, box: Box, p: ForensicsParams, writer: BundleWriter | None
) -> list[dict[str, Any]]:
    root = container_root(ctx.proc_root, box.init_pid)
    entries: list[dict[str, Any]] = []
    for path in p.paths:
        entry: dict[str, Any] = {"path": path}
        entries.append(entry)
        try:
            with resolve_allowed(root, path, p.allowed_roots) as r:
                entry["resolved_path"] = r.shown
                fd, st = r.open_regular()
                try:
                    entry |= {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
                    entry |= {
                        "size": st.st_size,
                        "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
                    }
                    if writer is None:
                        continue
                    room = ctx.max_forensics_total_bytes - writer.stored_bytes
                    keep = max(0, min(p.max_file_bytes, ctx.max_forensics_file_bytes, room))
                    info = writer.add_file(fd, keep)
                finally:
                    os.close(fd)
            entry |= {"sha256": info["sha256"], "size": info["size"], "truncated": info["truncated"]}
            entry |= {"blob": info["stored_sha256"], "stored_bytes": info["stored_bytes"]}
        except ActionError as exc:  # one unreadable or refused file does not spoil the bundle
            entry["error"] = exc.reason
    return entries


def _capture(box: Box, ctx: NodeContext, request: ActionRequest, p: ForensicsParams) -> Done:
    procs = _processes(ctx, box)
    sockets = _sockets(ctx, box, procs)
    details: dict[str, Any] = {**box.describe(), "processes": len(procs), "sockets": len(sockets)}
    if request.dry_run:
        files = _files(ctx, box, p, None)
        details |= {"pids": [proc["pid"] for proc in procs], "files": files}
        return Done(ActionOutcome.DRY_RUN, f"would capture a forensics bundle of {box.id[:12]}", details)
    writer = BundleWriter(ctx.forensics_root)
    try:
        # the runtime's document comes with environment values redacted (keys kept)
        inspect_blob = writer.add_bytes(canonical_json(box.info.document))
        files = _files(ctx, box, p, writer)
        env = box.info.env
        manifest = {
            "format": FORMAT,
            "action_id": request.action_id,
            "finding_id": request.finding_id,
            "reason": request.reason,
            "node": ctx.node,
            "captured_at": datetime.now(UTC).isoformat(),
            "container": {
                **box.describe(),
                "pod_uid": box.pod_uid,
                "image": box.info.image,
                "runtime": box.runtime.name,
                "init_pid": box.init_pid,
                "env_keys": [e.partition("=")[0] for e in env],
                "inspect_blob": inspect_blob,
            },
            "processes": procs,
            "sockets": sockets,
            "files": files,
            "blobs": {b.name: b.stat().st_size for b in sorted(writer.blobs.iterdir()) if b.is_file()},
        }
        bundle_id, where = writer.finish(manifest)
    except BaseException:
        writer.abort()
        raise
    details |= {"bundle_id": bundle_id, "bundle": str(where), "files": len(files)}
    return Done(ActionOutcome.SUCCEEDED, f"captured forensics bundle {bundle_id[:12]}", details)


class CaptureForensics(Action[NodeContext]):
    name = "capture_forensics"
    scope = Scope.NODE
    description = "Capture processes, sockets, chosen files and metadata of the container as a bundle."
    requires = ("container_id",)
    params = ForensicsParams
    permissions = ("hostPID", "CAP_SYS_PTRACE (/proc/<pid>/fd, exe, root)", "CAP_DAC_READ_SEARCH")

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        p = cast(ForensicsParams, params)
        for path in p.paths:
            validation.under_roots(validation.container_path(path, "paths"), p.allowed_roots, "paths")

    async def execute(self, ctx: NodeContext, request: ActionRequest) -> Done:
        p = cast(ForensicsParams, self.parse_params(request.parameters))
        self.check(request.target, p)
        box = await load(ctx, request.target)
        require_running(box)
        return await blocking(_capture, box, ctx, request, p)


ACTIONS.add(CaptureForensics.name, CaptureForensics(), __name__)

"""``quarantine_file``: take a file out of a container, keeping it (and how it was) for review.

The file is reached through ``/proc/<container init pid>/root`` and resolved confined to that
root (``_paths``); it must be a regular file under the allowed roots, both as named and where it
leads. Its content goes to ``<quarantine root>/<sha256>/content`` with one metadata file per
action (``action-<id>.json``: where it was, whose it was, its mode, owner and times), and only
then is it removed from the container. Undo puts content, mode, owner and mtime back at the
path it was removed from, refusing to replace what is there now unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome, ActionRequest, ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import Action, ActionError, Done, InvalidRequestError, Scope, TargetGoneError
from qcdr_response.actions.node._bundle import CHUNK, copy_hashing, private_dir, write_private
from qcdr_response.actions.node._context import Box, MiB, NodeContext, blocking, load, require_running
from qcdr_response.actions.node._paths import (
    DEFAULT_ALLOWED_ROOTS,
    check_roots,
    container_root,
    path_record,
    record_path,
    resolve_allowed,
    shown,
)
from qcdr_response.actions.registry import ACTIONS


class QuarantineParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_roots: tuple[str, ...] = Field(default=DEFAULT_ALLOWED_ROOTS, min_length=1)
    # bounded (1 TiB, far above any node's ceiling) like every integer that reaches the JSONB
    max_bytes: int = Field(default=64 * MiB, ge=1, le=MiB * MiB, description="Larger files are refused.")
    overwrite: bool = Field(default=False, description="Undo: replace a file now at the original path.")

    _roots = field_validator("allowed_roots")(check_roots)


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _meta_path(ctx: NodeContext, sha: str, action_id: int) -> Path:
    return ctx.quarantine_root / sha / f"action-{action_id}.json"


class QuarantineFile(Action[NodeContext]):
    name = "quarantine_file"
    scope = Scope.NODE
    description = "Move a file out of the container into the node's quarantine (restorable by undo)."
    requires = ("container_id", "path")
    params = QuarantineParams
    reversible = True
    permissions = (
        "hostPID",
        "CAP_SYS_PTRACE (/proc/<pid>/root)",
        "CAP_DAC_OVERRIDE",
        "CAP_CHOWN",
        "CAP_FOWNER",
    )

    def check(self, target: ActionTarget, params: BaseModel) -> None:
        super().check(target, params)
        p = cast(QuarantineParams, params)
        validation.under_roots(validation.container_path(cast(str, target.path)), p.allowed_roots)

    async def present(self, ctx: NodeContext, request: ActionRequest) -> bool:
        p = cast(QuarantineParams, self.parse_params(request.parameters))
        if request.op is ActionOp.UNDO:
            record = _undo_record(request)
            box = await load(ctx, request.target, record["container_id"])
            require_running(box)
            return await blocking(_restored, box, ctx, record, p)
        box = await load(ctx, request.target)
        require_running(box)
        kept = list(ctx.quarantine_root.glob(f"*/action-{request.action_id}.json"))
        return bool(kept) and await blocking(_gone, box, ctx, cast(str, request.target.path), p)

    async def recovered_undo(self, ctx: NodeContext, request: ActionRequest) -> dict[str, Any] | None:
        # the metadata file written before the original was removed holds all the record needs
        kept = sorted(ctx.quarantine_root.glob(f"*/action-{request.action_id}.json"))
        if not kept:
            return None
        return _undo_from(json.loads(kept[0].read_bytes()))

    async def execute(self, ctx: NodeContext, request: ActionRequest) -> Done:
        p = cast(QuarantineParams, self.parse_params(request.parameters))
        self.check(request.target, p)
        box = await load(ctx, request.target)
        require_running(box)
        return await blocking(_quarantine, box, ctx, request, p)

    async def undo(self, ctx: NodeContext, request: ActionRequest) -> Done:
        p = cast(QuarantineParams, self.parse_params(request.parameters))
        record = _undo_record(request)
        box = await load(ctx, request.target, record["container_id"])
        require_running(box)
        return await blocking(_restore, box, ctx, request, record, p)


def _gone(box: Box, ctx: NodeContext, path: str, p: QuarantineParams) -> bool:
    root = container_root(ctx.proc_root, box.init_pid)
    with resolve_allowed(root, path, p.allowed_roots, allow_missing=True) as r:
        return r.stat is None


def _quarantine(box: Box, ctx: NodeContext, request: ActionRequest, p: QuarantineParams) -> Done:
    limit = min(p.max_bytes, ctx.max_quarantine_bytes)
    path = cast(str, request.target.path)
    root = container_root(ctx.proc_root, box.init_pid)
    with resolve_allowed(root, path, p.allowed_roots, allow_missing=True) as r:
        if r.stat is None:
            raise TargetGoneError(f"{r.shown} does not exist in the container")
        fd, st = r.open_regular(limit)
        try:
            details: dict[str, Any] = {**box.describe(), "path": path, "resolved_path": r.shown}
            details |= {"size": st.st_size, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid}
            # other hard links keep the content reachable in the container: reported, not chased
            details["links"] = st.st_nlink
            if request.dry_run:
                details["sha256"] = _sha256_fd(fd)
                return Done(ActionOutcome.DRY_RUN, f"would quarantine {r.shown}", details)
            qroot = private_dir(ctx.quarantine_root)
            staging = qroot / f".staging-{uuid.uuid4().hex}"
            info = copy_hashing(fd, staging, keep=limit + 1)
            after = os.fstat(fd)
            if info["size"] > limit or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                staging.unlink()
                raise ActionError(f"{r.shown} changed while it was copied: left in place")
            sha = info["sha256"]
            content = private_dir(qroot / sha) / "content"
            if content.exists():
                staging.unlink()
            else:
                staging.rename(content)
            meta = {
                "original_path": path,
                **{f"resolved_{k}": v for k, v in path_record(r.path).items()},
                "container_id": box.id,
                "container": box.name,
                "pod": box.pod,
                "pod_uid": box.pod_uid,
                "namespace": box.namespace,
                "node": ctx.node,
                "sha256": sha,
                "size": info["size"],
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
                "mtime_ns": st.st_mtime_ns,
                "links": st.st_nlink,
                "action_id": request.action_id,
                "reason": request.reason,
                "quarantined_at": datetime.now(UTC).isoformat(),
            }
            write_private(_meta_path(ctx, sha, request.action_id), json.dumps(meta, indent=2).encode())
            if not r.still_same(st):
                raise ActionError(f"{r.shown} was replaced while it was copied: left in place (copy kept)")
            os.unlink(r.name, dir_fd=r.parent_fd)
        finally:
            os.close(fd)
    details |= {"sha256": sha, "quarantine": str(content.parent)}
    return Done(
        ActionOutcome.SUCCEEDED, f"quarantined {r.shown} (sha256 {sha[:12]})", details, _undo_from(meta)
    )


def _undo_from(meta: dict[str, Any]) -> dict[str, Any]:
    """The undo record of a quarantine, from its metadata: ``path`` is text, with ``path_hex``
    when the name is not UTF-8 (metadata written before ``resolved_path_hex`` existed holds the
    surrogate escapes of such a name: read the same)."""
    undo = {k: meta[k] for k in ("container_id", "sha256", "mode", "uid", "gid", "mtime_ns")}
    hexed = meta.get("resolved_path_hex")
    path = os.fsdecode(bytes.fromhex(hexed)) if isinstance(hexed, str) else str(meta["resolved_path"])
    return undo | path_record(path)


def _undo_record(request: ActionRequest) -> dict[str, Any]:
    """The request's undo record, checked, with ``path`` the exact name to restore."""
    record = dict(request.undo or {})
    need = {"container_id": str, "path": str, "sha256": str, "mode": int, "uid": int, "gid": int}
    for key, kind in need.items():
        if not isinstance(record.get(key), kind):
            raise InvalidRequestError(f"undo record: {key} missing or not a {kind.__name__}")
    if len(record["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in record["sha256"]):
        raise InvalidRequestError("undo record: sha256 is not a hex digest")
    try:
        record["path"] = record_path(record)
    except ValueError as exc:
        raise InvalidRequestError(f"undo record: {exc}") from None
    return record


def _restored(box: Box, ctx: NodeContext, record: dict[str, Any], p: QuarantineParams) -> bool:
    root = container_root(ctx.proc_root, box.init_pid)
    with resolve_allowed(root, record["path"], p.allowed_roots, allow_missing=True) as r:
        if r.stat is None or not stat.S_ISREG(r.stat.st_mode):
            return False
        fd, _ = r.open_regular()
        try:
            return bool(_sha256_fd(fd) == record["sha256"])
        finally:
            os.close(fd)


def _restore(
    box: Box, ctx: NodeContext, request: ActionRequest, record: dict[str, Any], p: QuarantineParams
) -> Done:
    sha, path = record["sha256"], record["path"]
    text = shown(path)
    content = ctx.quarantine_root / sha / "content"
    try:
        data = content.read_bytes()
    except FileNotFoundError:
        raise ActionError(f"the quarantine holds no file with sha256 {sha}") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise ActionError(f"the quarantined copy of {text} no longer matches its sha256: not restored")
    root = container_root(ctx.proc_root, box.init_pid)
    try:
        r = resolve_allowed(root, path, p.allowed_roots, allow_missing=True)
    except TargetGoneError as exc:
        raise ActionError(f"cannot restore {text}: {exc.reason}") from None
    with r:
        details: dict[str, Any] = {**box.describe(), "path": text, "sha256": sha, "size": len(data)}
        if r.stat is not None:
            if not p.overwrite:
                raise ActionError(f"{text} exists again in the container: not replaced (set overwrite)")
            if not stat.S_ISREG(r.stat.st_mode):
                raise ActionError(f"{text} is now not a regular file: not replaced")
            details["replaced"] = True
        if request.dry_run:
            return Done(ActionOutcome.DRY_RUN, f"would restore {text}", details)
        tmp = f".qcdr-restore-{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=r.parent_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, record["uid"], record["gid"])
            os.fchmod(fd, record["mode"])  # after chown, which drops set-id bits
            if isinstance(record.get("mtime_ns"), int):
                os.utime(fd, ns=(record["mtime_ns"], record["mtime_ns"]))
            os.fsync(fd)
            os.rename(tmp, r.name, src_dir_fd=r.parent_fd, dst_dir_fd=r.parent_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=r.parent_fd)
            raise
        finally:
            os.close(fd)
    meta = _meta_path(ctx, sha, request.action_id)
    if meta.exists():
        kept = json.loads(meta.read_bytes())
        kept["restored_at"] = datetime.now(UTC).isoformat()
        write_private(meta, json.dumps(kept, indent=2).encode())
    return Done(ActionOutcome.SUCCEEDED, f"restored {text} (sha256 {sha[:12]})", details)


ACTIONS.add(QuarantineFile.name, QuarantineFile(), __name__)

"""What the ATT&CK rules look at in a Tetragon event, extracted once per event.

The ingest adapter keeps Tetragon's JSON export object in ``SecurityEvent.raw``: either the whole
export line (``{"process_kprobe": {...}, "node_name": ..., "time": ...}``) or just the inner
object (``{"process": ..., "parent": ..., "function_name": ...}``). Both are read here; whatever
``raw`` lacks falls back to the normalized fields (process path, parent path, destination,
workload), so a rule still sees the binary of an event stored without its raw body.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

# Export objects that carry a hook (a kernel function, a tracepoint, a user function, an LSM hook).
HOOK_EVENTS = frozenset({"process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm"})
EVENT_TYPES = HOOK_EVENTS | {
    "process_exec",
    "process_exit",
    "process_loader",
    "process_throttle",
    # the older Hubble/"security observability" exports (network observability in the book)
    "process_connect",
    "process_close",
    "process_listen",
}
_ARCH_PREFIXES = ("__x64_", "__arm64_", "__ia32_", "__s390x_", "__riscv_")
# hooks through which a process enters other namespaces
_NAMESPACE_HOOKS = frozenset({"sys_setns", "sys_unshare", "setns", "unshare", "switch_task_namespaces"})
# namespaces that, reported as the host's for a process in a pod, mean it left its sandbox
_ESCAPE_NAMESPACES = frozenset({"mnt", "pid", "net", "ipc", "uts", "cgroup", "user"})
_TRIM = "\"'`;|&()<>{}"
# hooks that write to the file they report
_WRITE_HOOKS = frozenset(
    {"sys_write", "sys_pwrite64", "sys_writev", "sys_pwritev", "sys_pwritev2"}
    | {"sys_truncate", "sys_ftruncate"}
)
# hooks whose last integer argument is an access mask (MAY_WRITE 2, MAY_APPEND 8)
_PERMISSION_HOOKS = frozenset({"security_file_permission", "security_inode_permission", "file_permission"})
# hooks whose last integer argument holds open(2) flags (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND)
_OPEN_HOOKS = frozenset({"sys_open", "sys_openat", "sys_openat2", "sys_creat"})
_MAY_WRITE = 0o2 | 0o10
_OPEN_WRITE = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000


@dataclass(frozen=True, slots=True)
class TetragonView:
    type: str  # "process_exec", "process_kprobe", ...; "" when neither raw nor category tells
    binary: str
    arguments: str
    cwd: str
    uid: int | None
    parent_binary: str
    parent_arguments: str
    function: str  # the hook as reported ("__x64_sys_setns", "security_file_permission")
    syscall: str  # the hook without its architecture prefix ("sys_setns")
    function_args: str  # the hook's arguments flattened to text, one per line
    file_paths: tuple[str, ...]  # files the hook reported, then absolute paths in the arguments
    file_write: bool  # the hook writes to, or asks to write to, the file it reports
    capabilities: frozenset[str]  # the process's effective capabilities
    destination_port: int | None
    destination_ip: str  # "" when the event names no remote address
    in_container: bool
    host_namespaces: frozenset[str]  # namespaces reported as the host's (``ns.<name>.is_host``)

    @property
    def namespace_change(self) -> bool:
        """The process switched namespaces (setns/unshare hook) or, inside a pod, runs in host ones."""
        if self.syscall in _NAMESPACE_HOOKS or self.function in _NAMESPACE_HOOKS:
            return True
        return self.in_container and bool(self.host_namespaces & _ESCAPE_NAMESPACES)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def export_body(event: SecurityEvent) -> tuple[str, Mapping[str, Any]]:
    """(event type, the export's inner object) from ``raw``; ("", {}) when raw has neither."""
    raw = event.raw
    for key, value in raw.items():
        if key in EVENT_TYPES and isinstance(value, Mapping):
            return key, value
    if isinstance(raw.get("process"), Mapping):
        for key in ("type", "event_type", "kind"):
            declared = _str(raw.get(key))
            if declared in EVENT_TYPES:
                return declared, raw
        return (event.category if event.category in EVENT_TYPES else ""), raw
    return (event.category if event.category in EVENT_TYPES else ""), {}


def _walk_args(args: Any) -> Iterator[tuple[str, Any]]:
    """(argument kind, value) of a hook's ``args`` list (``[{"file_arg": {...}}, {"int_arg": 2}]``)."""
    if not isinstance(args, list):
        return
    for item in args:
        if isinstance(item, Mapping):
            for kind, value in item.items():
                if kind != "label":
                    yield kind, value


def _absolute(path: str) -> str:
    # older Tetragon prints d_path results without the leading slash ("etc/passwd")
    return path if path.startswith("/") else "/" + path


@dataclass(slots=True)
class _Hook:
    texts: list[str]
    paths: list[str]
    port: int | None = None
    address: str = ""
    last_int: int | None = None


def _hook_details(body: Mapping[str, Any]) -> _Hook:
    """Text of every argument, file paths, destination port and last integer of a hook event."""
    hook = _Hook([], [])
    texts, paths = hook.texts, hook.paths
    for kind, value in _walk_args(body.get("args")):
        if isinstance(value, int) and not isinstance(value, bool):
            hook.last_int = value
            texts.append(str(value))
            continue
        if isinstance(value, str | float) and not isinstance(value, bool):
            text = str(value)
            texts.append(text)
            if kind == "string_arg" and text.startswith("/"):  # open(2)-style hooks pass the path
                paths.append(text)
            continue
        detail = _dict(value)
        if kind in ("file_arg", "path_arg", "linux_binprm_arg") and _str(detail.get("path")):
            path = _absolute(detail["path"])
            paths.append(path)
            texts.append(path)
        elif kind in ("sock_arg", "sockaddr_arg", "skb_arg"):
            dport = detail.get("dport")
            if isinstance(dport, int) and hook.port is None:
                hook.port = dport
                hook.address = _str(detail.get("daddr"))
            texts.extend(str(detail[k]) for k in ("daddr", "dport", "protocol") if k in detail)
        elif kind in ("module_arg", "capability_arg"):
            texts.append(_str(detail.get("name")))
        elif kind == "process_credentials_arg":
            caps = _dict(detail.get("caps"))
            texts.extend(c for c in caps.get("effective") or () if isinstance(c, str))
            texts.extend(f"{k}={detail[k]}" for k in ("uid", "euid", "gid", "egid") if k in detail)
        else:
            texts.extend(_str(v) for v in detail.values() if isinstance(v, str))
    hook.texts = [t for t in texts if t]
    return hook


def _writes(syscall: str, last_int: int | None) -> bool:
    if syscall in _WRITE_HOOKS:
        return True
    if last_int is None:
        return False
    if syscall in _PERMISSION_HOOKS:
        return bool(last_int & _MAY_WRITE)
    return syscall in _OPEN_HOOKS and bool(last_int & _OPEN_WRITE)


def argument_paths(arguments: str) -> list[str]:
    """Absolute paths among a command line's words (``--file=/x`` and quoted words included)."""
    found = []
    for word in arguments.split():
        word = word.strip(_TRIM)
        if "=" in word and not word.startswith("/"):
            word = word.split("=", 1)[1].strip(_TRIM)
        if word.startswith("/") and len(word) > 1:
            found.append(word)
    return found


def _host_namespaces(process: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(
        name for name, ns in _dict(process.get("ns")).items() if isinstance(ns, Mapping) and ns.get("is_host")
    )


def view(event: SecurityEvent) -> TetragonView:
    kind, body = export_body(event)
    process = _dict(body.get("process"))
    parent = _dict(body.get("parent"))
    normalized = event.process
    binary = _str(process.get("binary")) or (normalized.path or "" if normalized else "")
    arguments = _str(process.get("arguments"))
    parent_binary = _str(parent.get("binary")) or (normalized.parent_path or "" if normalized else "")
    function = _str(body.get("function_name")) or _str(body.get("event")) or _str(body.get("subsys"))
    syscall = function
    for prefix in _ARCH_PREFIXES:
        if function.startswith(prefix):
            syscall = function[len(prefix) :]
            break
    hook = _hook_details(body) if kind in HOOK_EVENTS or "args" in body else _Hook([], [])
    port, address, paths = hook.port, hook.address, hook.paths
    if port is None:
        dport = body.get("destination_port")
        if isinstance(dport, int):
            port, address = dport, _str(body.get("destination_ip"))
        elif event.network is not None:
            port = event.network.port
    if not address and event.network is not None and event.network.ip is not None:
        address = str(event.network.ip)
    paths.extend(argument_paths(arguments))
    caps = _dict(process.get("cap")).get("effective") or ()
    workload = event.workload
    return TetragonView(
        type=kind,
        binary=binary,
        arguments=arguments,
        cwd=_str(process.get("cwd")),
        uid=uid if isinstance(uid := process.get("uid"), int) and not isinstance(uid, bool) else None,
        parent_binary=parent_binary,
        parent_arguments=_str(parent.get("arguments")),
        function=function,
        syscall=syscall,
        function_args="\n".join(hook.texts),
        file_paths=tuple(dict.fromkeys(paths)),
        file_write=bool(hook.paths) and _writes(syscall, hook.last_int),
        capabilities=frozenset(c for c in caps if isinstance(c, str)),
        destination_port=port,
        destination_ip=address,
        in_container=bool(
            process.get("pod") or process.get("docker") or workload.pod or workload.container_id
        ),
        host_namespaces=_host_namespaces(process),
    )

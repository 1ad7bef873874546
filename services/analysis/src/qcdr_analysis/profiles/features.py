"""What the profiler takes from one event: an exec, a destination, files, a binary hash.

The normalized fields come first (``process.path``/``parent_path``, ``network``); ``raw`` is read
only for what the contract lacks, and only for Tetragon:

* ``process.arguments`` of a ``process_exec`` (package-manager subcommands: ``pip install``);
* files of a hook event (``process_kprobe``/``_lsm``/``_tracepoint``/``_uprobe``): the paths of
  its ``file_arg``/``path_arg``/``linux_binprm_arg`` arguments and of ``string_arg`` arguments
  that are absolute paths (open(2)-style hooks), and whether the hook writes (the same rules as
  :mod:`qcdr_analysis.tetragon.view`: write hooks, ``MAY_WRITE``/``MAY_APPEND`` masks, write
  flags of open(2)). Paths that merely appear on a command line are *not* file accesses here;
* a binary's hash: Tetragon reports one only on LSM hooks whose policy asks for ``imaHash``
  (``process_lsm.ima_hash``, ``"sha256:<hex>"``, on ``bprm_check_security`` with the exec'd file
  as its ``linux_binprm_arg``); ``process.binary_properties`` carries set-uid and inode facts, no
  hash. Producers other than Tetragon may put a ``sha256`` beside ``binary`` in ``process`` or at
  the top of ``raw``; both are read. A hash always belongs to a path: the binprm file for an
  LSM hook, the exec'd binary otherwise.

Extraction allocates one small object per event and parses no JSON and no regular expression;
events that carry nothing the profiler uses return None early.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

# ``_writes`` holds the write-detection rules of the ATT&CK rule view; sharing it keeps one
# definition of "this hook writes" (the view itself also parses much the profiler does not need).
from qcdr_analysis.tetragon.view import EVENT_TYPES, HOOK_EVENTS, _writes

EXEC = "process_exec"
# lifecycle and socket events that repeat what an exec or a connect already said
IGNORED = frozenset({"process_exit", "process_close", "process_listen", "process_loader", "process_throttle"})
_ARCH_PREFIXES = ("__x64_", "__arm64_", "__ia32_", "__s390x_", "__riscv_")
_FILE_ARGS = frozenset({"file_arg", "path_arg", "linux_binprm_arg"})


class Features:
    """One event's behaviour. Plain slots (no pydantic): built on the hot path."""

    __slots__ = (
        "arguments",
        "binary",
        "dest_ip",
        "dest_port",
        "digest",
        "domain",
        "exec_path",
        "files",
        "hashed_path",
        "parent",
        "write",
    )

    def __init__(self) -> None:
        self.binary: str | None = None  # the process the event is about (for explanations)
        self.exec_path: str | None = None  # set when the event is an execution of this binary
        self.parent: str | None = None
        self.arguments = ""
        self.hashed_path: str | None = None
        self.digest: str | None = None  # "sha256:<hex>" of hashed_path
        self.dest_ip: str | None = None
        self.dest_port: int | None = None
        self.domain: str | None = None
        self.files: tuple[str, ...] = ()
        self.write = False

    def destination_keys(self) -> list[str]:
        """``ip:port`` (``[v6]:port``) and ``domain:port``; without a port, the host alone."""
        port = "" if self.dest_port is None else f":{self.dest_port}"
        keys = []
        if self.dest_ip:
            keys.append(f"[{self.dest_ip}]{port}" if ":" in self.dest_ip else f"{self.dest_ip}{port}")
        if self.domain:
            keys.append(f"{self.domain.lower().rstrip('.')}{port}")
        return keys


def _body(raw: Mapping[str, Any], category: str) -> Mapping[str, Any]:
    # the whole export line ({"process_exec": {...}}) or just the inner object
    body = raw.get(category)
    if isinstance(body, dict):
        return body
    for key, value in raw.items():
        if key in EVENT_TYPES and isinstance(value, dict):
            return value
    return raw


def _normalize_digest(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    algorithm, _, hexdigest = value.rpartition(":")
    return f"{(algorithm or 'sha256').lower()}:{hexdigest.lower()}"


def _hook_files(body: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None, bool]:
    """(files, the binprm file if any, writes) of a hook event's arguments."""
    args = body.get("args")
    if type(args) is not list:
        return (), None, False
    paths: list[str] = []
    binprm = None
    last_int = None
    for item in args:
        if type(item) is not dict:  # JSON objects are dicts: no ABC check on the hot path
            continue
        for kind, value in item.items():
            if kind in _FILE_ARGS and type(value) is dict:
                path = value.get("path")
                if isinstance(path, str) and path:
                    # older Tetragon prints d_path results without the leading slash
                    path = path if path.startswith("/") else "/" + path
                    paths.append(path)
                    if kind == "linux_binprm_arg":
                        binprm = path
            elif kind == "string_arg" and isinstance(value, str) and value.startswith("/"):
                paths.append(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                last_int = value  # open flags or a permission mask (see ``_writes``)
    if not paths:
        return (), binprm, False
    function = body.get("function_name") or body.get("event") or ""
    syscall = function if isinstance(function, str) else ""
    for prefix in _ARCH_PREFIXES:
        if syscall.startswith(prefix):
            syscall = syscall[len(prefix) :]
            break
    return tuple(dict.fromkeys(paths)), binprm, _writes(syscall, last_int)


def extract(event: SecurityEvent) -> Features | None:
    """The event's behaviour, or None when it has none the profiler records."""
    category = event.category
    if category in IGNORED:
        return None
    features = Features()
    process = event.process
    if process is not None:
        features.binary = process.path
        features.parent = process.parent_path
    network = event.network
    if network is not None:
        features.dest_ip = None if network.ip is None else str(network.ip)
        features.dest_port = network.port
        features.domain = network.domain
    if event.source != "tetragon":
        # detections from other sources (Qualys CDR, Falco) name the process they saw running
        features.exec_path = features.binary
        return features if features.exec_path or features.dest_ip or features.domain else None
    raw = event.raw
    if category == EXEC:
        features.exec_path = features.binary
        body = _body(raw, category)
        proc = body.get("process")
        if type(proc) is dict:
            arguments = proc.get("arguments")
            features.arguments = arguments if isinstance(arguments, str) else ""
            digest = _normalize_digest(proc.get("sha256") or raw.get("sha256"))
            if digest is not None and features.binary:
                features.hashed_path, features.digest = features.binary, digest
        return features if features.exec_path else None
    if category in HOOK_EVENTS:
        body = _body(raw, category)
        if network is not None:
            # a socket hook (tcp_connect, ...): the adapter normalized its destination
            return features if features.dest_ip or features.domain else None
        files, binprm, write = _hook_files(body)
        features.files, features.write = files, write
        digest = _normalize_digest(body.get("ima_hash"))
        if digest is not None and binprm:
            features.hashed_path, features.digest = binprm, digest
        if binprm and not write:
            # bprm_check names the file being exec'd: not a file access of the profile's own
            features.files = tuple(p for p in files if p != binprm)
        if files or features.dest_ip or features.domain or features.digest:
            return features
        return None
    if category == "process_connect":  # pre-1.0 exports: the adapter normalized the destination
        return features if features.dest_ip else None
    return None

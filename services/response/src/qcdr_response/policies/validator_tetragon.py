"""Validate a Tetragon ``TracingPolicy`` / ``TracingPolicyNamespaced`` before it leaves the operator.

The API server accepts most broken policies; the agent then refuses them per node and says so
only in its metrics (``tetragon_tracingpolicy_loaded``). So this checks what the CRD schema
checks *and* what the agent checks at load time (``pkg/selectors``), for a given
Tetragon release and kernel. Selector-level checks are in ``validator_tetragon_selectors``.
"""

from __future__ import annotations

from typing import Any

from qcdr_response.policies import targets as tg
from qcdr_response.policies.targets import TetragonTarget
from qcdr_response.policies.validator import (
    Issues,
    PolicyIssue,
    as_list,
    as_map,
    check_label_selector,
    check_metadata,
    is_int,
)
from qcdr_response.policies.validator import TetragonCode as C
from qcdr_response.policies.validator_tetragon_selectors import check_selectors
from qcdr_response.policies.validator_tetragon_values import HookContext

API_VERSION = "cilium.io/v1alpha1"
KINDS = ("TracingPolicy", "TracingPolicyNamespaced")
MAX_TAGS = 16
MAX_USDT_ARGS = 5
# Field names of each hook kind (from the CRD), besides `args`/`selectors`/`tags`/`message`.
_HOOK_FIELDS: dict[str, frozenset[str]] = {
    "kprobes": frozenset({"call", "syscall", "return", "returnArg", "returnArgAction", "data", "ignore"}),
    "fentries": frozenset({"call", "syscall", "return", "returnArg", "returnArgAction", "data", "ignore"}),
    "tracepoints": frozenset({"subsystem", "event", "raw"}),
    "uprobes": frozenset(
        {
            "path",
            "symbols",
            "addrs",
            "offsets",
            "refCtrOffsets",
            "binaryDigests",
            "btfPath",
            "return",
            "returnArg",
            "data",
            "ignore",
        }
    ),
    "lsmhooks": frozenset({"hook"}),
    "usdts": frozenset({"path", "provider", "name", "btfPath"}),
}
_HOOK_REQUIRED: dict[str, tuple[str, ...]] = {
    "kprobes": ("call",),
    "fentries": ("call",),
    "tracepoints": ("subsystem", "event"),
    "uprobes": ("path",),
    "lsmhooks": ("hook",),
    "usdts": ("path", "provider", "name"),
}
_COMMON_HOOK_FIELDS = frozenset({"args", "selectors", "tags", "message"})
_ARG_FIELDS = frozenset(
    {
        "index",
        "type",
        "label",
        "maxData",
        "resolve",
        "returnCopy",
        "sizeArgIndex",
        "source",
        "btfType",
        "btfTypeModule",
    }
)
_BUFFER_TYPES = frozenset({"char_buf", "char_iovec"})
_LIST_TYPES = frozenset({"syscalls", "generated_syscalls", "generated_ftrace"})
# Syscalls arm64 (asm-generic) does not have: a policy on them silently never fires there.
ARM64_MISSING_SYSCALLS = frozenset(
    {
        "open", "creat", "chmod", "chown", "lchown", "rename", "renameat", "unlink", "rmdir", "mkdir",
        "link", "symlink", "readlink", "mknod", "access", "stat", "lstat", "fork", "vfork", "pipe",
        "dup2", "poll", "select", "epoll_create", "epoll_wait", "inotify_init", "eventfd", "signalfd",
        "utime", "utimes", "futimesat", "getdents", "alarm", "pause", "time", "uselib", "ustat",
        "sysfs", "getpgrp",
    }
)  # fmt: skip
_ARCH_PREFIXES = ("__x64_sys_", "__arm64_sys_", "__ia32_sys_", "__se_sys_", "__do_sys_")


def validate_tracing_policy(body: dict[str, Any], target: TetragonTarget) -> list[PolicyIssue]:
    """All problems of one TracingPolicy manifest for ``target``; errors mean "do not apply"."""
    issues = Issues()
    if not isinstance(body, dict):
        issues.error("", C.STRUCTURE, "a TracingPolicy manifest must be a map")
        return issues.items
    if body.get("apiVersion") != API_VERSION:
        issues.error(
            "apiVersion", C.KIND, f"apiVersion must be {API_VERSION} (got {body.get('apiVersion')!r})"
        )
    kind = body.get("kind")
    if kind not in KINDS:
        issues.error("kind", C.KIND, f"kind must be one of {KINDS} (got {kind!r})")
    namespaced = kind == "TracingPolicyNamespaced"
    check_metadata(
        body.get("metadata"),
        issues,
        codes={"name": C.NAME, "labels": C.LABELS, "namespace": C.SCOPE},
        namespaced=namespaced,
        kind=str(kind),
    )
    for key in body:
        if key not in ("apiVersion", "kind", "metadata", "spec"):
            issues.error(key, C.STRUCTURE, f"unknown top-level field {key!r}")
    spec = as_map(body.get("spec"))
    if spec is None:
        issues.error("spec", C.STRUCTURE, "spec must be a map")
        return issues.items
    _check_spec(spec, namespaced, issues, target)
    return issues.items


def _check_spec(spec: dict[str, Any], namespaced: bool, issues: Issues, target: TetragonTarget) -> None:
    for key in spec:
        requirement = tg.SPEC_FIELDS.get(key)
        if requirement is None:
            issues.error(f"spec.{key}", C.STRUCTURE, f"unknown spec field {key!r}")
            continue
        unmet = target.unmet(requirement, f"spec.{key}")
        if unmet:
            issues.error(f"spec.{key}", C.KERNEL if unmet.kind == "kernel" else C.VERSION, unmet.message)
    _check_workload_selectors(spec, namespaced, issues)
    list_names = _check_lists(spec.get("lists"), issues)
    enforcers = as_list(spec.get("enforcers")) or []
    if len(enforcers) > 1:
        issues.error("spec.enforcers", C.LIMIT, "only one enforcer definition is supported per policy")
    _check_options(spec.get("options"), issues)
    hooks = 0
    for kind, requirement in tg.HOOK_KINDS.items():
        raw = spec.get(kind)
        if raw is None:
            continue
        entries = as_list(raw)
        if entries is None:
            issues.error(f"spec.{kind}", C.STRUCTURE, f"spec.{kind} must be a list")
            continue
        unmet = target.unmet(requirement, kind)
        if unmet and entries:
            issues.error(f"spec.{kind}", C.KERNEL if unmet.kind == "kernel" else C.VERSION, unmet.message)
        for i, hook in enumerate(entries):
            hooks += 1
            _check_hook(hook, kind, f"spec.{kind}[{i}]", list_names, bool(enforcers), issues, target)
    if hooks == 0 and not spec.get("loader"):
        issues.warn("spec", C.STRUCTURE, "the policy defines no hook, so it does nothing")


def _check_workload_selectors(spec: dict[str, Any], namespaced: bool, issues: Issues) -> None:
    check_label_selector(spec.get("podSelector"), "spec.podSelector", issues, C.WORKLOAD_SELECTOR)
    container = spec.get("containerSelector")
    check_label_selector(container, "spec.containerSelector", issues, C.WORKLOAD_SELECTOR)
    container_map = as_map(container) or {}
    for key in as_map(container_map.get("matchLabels")) or {}:
        if key not in ("name", "repo"):
            issues.warn(
                f"spec.containerSelector.matchLabels[{key}]",
                C.WORKLOAD_SELECTOR,
                "containerSelector matches container fields (name, repo), not labels",
            )
    if "hostSelector" in spec:
        host = spec["hostSelector"]
        host_map = as_map(host)
        if namespaced:
            issues.error(
                "spec.hostSelector",
                C.SCOPE,
                "TracingPolicyNamespaced must not set hostSelector (it applies to pods of one namespace)",
            )
        elif host is not None and (host_map is None or host_map):
            issues.error(
                "spec.hostSelector",
                C.WORKLOAD_SELECTOR,
                "hostSelector must be null or {} (all host processes)",
            )


def _check_lists(raw: Any, issues: Issues) -> frozenset[str]:
    names: set[str] = set()
    for i, entry in enumerate(as_list(raw) or []):
        path = f"spec.lists[{i}]"
        item = as_map(entry)
        if item is None or not isinstance(item.get("name"), str) or not item["name"]:
            issues.error(path, C.STRUCTURE, "each list needs a name")
            continue
        if item["name"] in names:
            issues.error(path, C.STRUCTURE, f"duplicate list name {item['name']!r}")
        names.add(item["name"])
        if item.get("type") is not None and item["type"] not in _LIST_TYPES:
            issues.error(f"{path}.type", C.STRUCTURE, f"list type must be one of {sorted(_LIST_TYPES)}")
        if item.get("type") in ("syscalls", None):
            for j, value in enumerate(as_list(item.get("values")) or []):
                _portability(str(value), f"{path}.values[{j}]", issues)
    return frozenset(names)


def _check_options(raw: Any, issues: Issues) -> None:
    for i, entry in enumerate(as_list(raw) or []):
        option = as_map(entry)
        if option is None or not isinstance(option.get("name"), str):
            issues.error(f"spec.options[{i}]", C.STRUCTURE, "each option needs a name")
        elif option["name"] == "policy-mode" and option.get("value") not in ("enforce", "monitor"):
            issues.error(f"spec.options[{i}]", C.STRUCTURE, "policy-mode must be enforce or monitor")


def _hook_call(hook: dict[str, Any], kind: str) -> str:
    if kind in ("kprobes", "fentries"):
        return str(hook.get("call", ""))
    if kind == "tracepoints":
        return f"{hook.get('subsystem', '')}/{hook.get('event', '')}"
    if kind == "lsmhooks":
        return str(hook.get("hook", ""))
    if kind == "usdts":
        return f"{hook.get('provider', '')}:{hook.get('name', '')}"
    return f"{hook.get('path', '')}:{','.join(map(str, as_list(hook.get('symbols')) or []))}"


def _check_hook(
    raw: Any,
    kind: str,
    path: str,
    list_names: frozenset[str],
    has_enforcers: bool,
    issues: Issues,
    target: TetragonTarget,
) -> None:
    hook = as_map(raw)
    if hook is None:
        issues.error(path, C.STRUCTURE, "each hook must be a map")
        return
    allowed = _HOOK_FIELDS[kind] | _COMMON_HOOK_FIELDS
    for key in hook:
        if key not in allowed:
            issues.error(f"{path}.{key}", C.STRUCTURE, f"unknown field {key!r} in {kind}")
    _check_hook_identity(hook, kind, path, list_names, issues)
    tags = as_list(hook.get("tags")) or []
    if len(tags) > MAX_TAGS:
        issues.error(f"{path}.tags", C.LIMIT, f"{len(tags)} tags: at most {MAX_TAGS} per hook")
    args = _check_args(hook.get("args"), kind, hook, f"{path}.args", issues, target)
    data = _check_args(hook.get("data"), kind, hook, f"{path}.data", issues, target) if "data" in hook else ()
    if kind == "usdts" and len(args) > MAX_USDT_ARGS:
        issues.error(f"{path}.args", C.LIMIT, f"a USDT probe has at most {MAX_USDT_ARGS} arguments")
    returns = bool(hook.get("return"))
    return_arg = as_map(hook.get("returnArg"))
    if returns and return_arg is None:
        issues.error(f"{path}.returnArg", C.HOOK, "return: true needs a returnArg")
    if return_arg is not None:
        _check_arg(return_arg, f"{path}.returnArg", issues, target)
    action = hook.get("returnArgAction")
    if action is not None and action not in ("TrackSock", "UntrackSock"):
        issues.error(f"{path}.returnArgAction", C.ACTION, "returnArgAction must be TrackSock or UntrackSock")
    ctx = HookContext(
        kind=kind,
        call=_hook_call(hook, kind),
        args=args,
        data=data,
        return_arg=return_arg,
        returns=returns,
        list_names=list_names,
        has_enforcers=has_enforcers,
    )
    if "selectors" in hook:
        check_selectors(hook["selectors"], ctx, f"{path}.selectors", issues, target)


def _check_hook_identity(
    hook: dict[str, Any], kind: str, path: str, list_names: frozenset[str], issues: Issues
) -> None:
    for key in _HOOK_REQUIRED[kind]:
        if not isinstance(hook.get(key), str) or not hook[key].strip():
            issues.error(f"{path}.{key}", C.HOOK, f"{kind} need a non-empty {key}")
    for key in ("syscall", "return", "raw"):
        if key in hook and not isinstance(hook[key], bool):
            issues.error(f"{path}.{key}", C.HOOK, f"{key} must be a boolean (true/false, not a string)")
    if kind == "uprobes":
        given = [k for k in ("symbols", "addrs", "offsets") if hook.get(k)]
        if len(given) > 1:
            issues.error(path, C.HOOK, "a uprobe takes at most one of symbols, addrs and offsets")
    call = hook.get("call")
    if kind in ("kprobes", "fentries") and isinstance(call, str):
        if call.startswith("list:"):
            if call[len("list:") :] not in list_names:
                issues.error(f"{path}.call", C.HOOK, f"{call!r} names no entry of spec.lists")
        else:
            _portability(call, f"{path}.call", issues)
            looks_syscall = "sys_" in call
            if hook.get("syscall", True) and not looks_syscall:
                issues.warn(
                    f"{path}.syscall",
                    C.PORTABILITY,
                    f"{call!r} is not a syscall but `syscall` is not false (the CRD defaults it to true): "
                    "arguments would be read with the syscall ABI",
                )
            elif hook.get("syscall") is False and call.startswith("sys_"):
                issues.warn(f"{path}.syscall", C.PORTABILITY, f"{call!r} is a syscall but `syscall: false`")


def _portability(call: str, path: str, issues: Issues) -> None:
    if call.startswith(_ARCH_PREFIXES):
        issues.warn(
            path, C.PORTABILITY, f"{call!r} is architecture-specific: write the sys_ name without prefix"
        )
    name = call.rsplit("sys_", 1)[-1] if "sys_" in call else None
    if name in ARM64_MISSING_SYSCALLS:
        issues.warn(
            path,
            C.PORTABILITY,
            f"{call!r} does not exist on arm64 (and modern libcs use the *at variants): the hook never "
            "fires there and is easy to bypass",
        )


def _check_args(
    raw: Any, kind: str, hook: dict[str, Any], path: str, issues: Issues, target: TetragonTarget
) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    entries = as_list(raw)
    if entries is None:
        issues.error(path, C.STRUCTURE, "args must be a list")
        return ()
    good: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        apath = f"{path}[{i}]"
        arg = as_map(entry)
        if arg is None:
            issues.error(apath, C.STRUCTURE, "each argument must be a map with index and type")
            continue
        _check_arg(arg, apath, issues, target)
        index = arg.get("index", 0)
        if is_int(index):
            if index in seen:
                issues.error(apath, C.ARG, f"argument index {index} is declared twice")
            seen.add(index)
        good.append(arg)
    _check_arg_semantics(good, kind, hook, path, issues)
    return tuple(good)


def _check_arg(arg: dict[str, Any], path: str, issues: Issues, target: TetragonTarget) -> None:
    for key in arg:
        if key not in _ARG_FIELDS:
            issues.error(f"{path}.{key}", C.STRUCTURE, f"unknown argument field {key!r}")
    index = arg.get("index", 0)
    if not is_int(index) or index < 0:
        issues.error(f"{path}.index", C.ARG, "index must be a non-negative integer")
    if "type" not in arg:
        issues.error(f"{path}.type", C.ARG, "every argument needs a type")
        return
    arg_type = arg["type"]
    requirement = tg.ARG_TYPES.get(arg_type) if isinstance(arg_type, str) else None
    if requirement is None:
        issues.error(f"{path}.type", C.ARG, f"{arg_type!r} is not a Tetragon argument type")
        return
    unmet = target.unmet(requirement, f"argument type {arg_type}")
    if unmet:
        issues.error(f"{path}.type", C.KERNEL if unmet.kind == "kernel" else C.VERSION, unmet.message)
    if arg.get("returnCopy") and arg_type not in _BUFFER_TYPES:
        issues.warn(f"{path}.returnCopy", C.ARG, "returnCopy only applies to char_buf/char_iovec")
    if arg.get("returnCopy") and arg.get("maxData"):
        issues.warn(f"{path}.maxData", C.ARG, "maxData does not work together with returnCopy")


def _check_arg_semantics(
    args: list[dict[str, Any]], kind: str, hook: dict[str, Any], path: str, issues: Issues
) -> None:
    call = str(hook.get("call", ""))
    bare = call.rsplit("sys_", 1)[-1] if "sys_" in call else ""
    for i, arg in enumerate(args):
        apath = f"{path}[{i}]"
        size_index = arg.get("sizeArgIndex")
        index = arg.get("index", 0)
        if size_index not in (None, 0):
            if arg.get("type") not in _BUFFER_TYPES:
                issues.warn(
                    f"{apath}.sizeArgIndex", C.ARG, "sizeArgIndex only applies to char_buf/char_iovec"
                )
            if not is_int(size_index) or size_index < 1:
                issues.error(
                    f"{apath}.sizeArgIndex", C.ARG, "sizeArgIndex is 1-based: the size argument's index + 1"
                )
            elif is_int(index) and size_index == index + 1:
                issues.error(
                    f"{apath}.sizeArgIndex",
                    C.ARG,
                    f"sizeArgIndex {size_index} points at the buffer itself (index {index}); it is 1-based, "
                    f"so for a size argument at index N write N+1",
                )
        argv_index = {"execve": 1, "execveat": 2}.get(bare)
        if kind in ("kprobes", "fentries") and arg.get("type") == "string" and index == argv_index:
            issues.warn(
                f"{apath}.type",
                C.SEMANTICS,
                f"{call} argument {index} is argv (char **): typed string it reads the pointer, not "
                "the arguments; match the executed path (the filename argument) instead",
            )

"""Small builders for TracingPolicy hooks and selectors, so generators read like the policy they make.

Every builder returns plain dicts (what the API server and the validators see). Hooks are chosen
for what Tetragon can really filter in the kernel:

- exec: ``sys_execve`` arg 0 is the path being executed (a ``string``); argv cannot be matched.
- files: ``security_file_permission`` (``file`` + ``int`` access mask) sees resolved paths, so
  relative paths and ``openat`` variants cannot bypass it, and as an LSM hook it can be overridden.
- connects: ``tcp_connect`` takes a ``sock`` whose destination is known (``DAddr``/``DPort``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

MAY_WRITE = 2
MAY_READ = 4
# Integer-valued operators take at most 4 values per matchArgs entry in the kernel.
MAX_INT_VALUES = 4
# file/fd path matches hold at most 8 values per entry on kernels >= 5.3.
MAX_FILE_VALUES = 8
MAX_SELECTORS = 5

# Ranges a "towards the internet" connect filter excludes (matched with NotDAddr).
NON_PUBLIC_CIDRS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


def chunked(values: Sequence[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(values), size):
        yield list(values[i : i + size])


def actions(action: str, *, arg_error: int | None = None) -> list[dict[str, Any]]:
    item: dict[str, Any] = {"action": action}
    if action == "Override":
        item["argError"] = -1 if arg_error is None else arg_error
    return [item]


def match_arg(index: int, operator: str, values: Iterable[str | int]) -> dict[str, Any]:
    return {"index": index, "operator": operator, "values": [str(v) for v in values]}


def selector(
    *,
    match_args: Sequence[dict[str, Any]] = (),
    binaries: tuple[str, Sequence[str]] | None = None,
    action: list[dict[str, Any]],
) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    if match_args:
        sel["matchArgs"] = list(match_args)
    if binaries is not None:
        operator, paths = binaries
        sel["matchBinaries"] = [{"operator": operator, "values": sorted(set(paths))}]
    sel["matchActions"] = action
    return sel


def exec_hook(selectors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "call": "sys_execve",
        "syscall": True,
        "args": [{"index": 0, "type": "string"}],
        "selectors": list(selectors),
    }


def file_permission_hook(selectors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "call": "security_file_permission",
        "syscall": False,
        "args": [{"index": 0, "type": "file"}, {"index": 1, "type": "int"}],
        "selectors": list(selectors),
    }


def truncate_hook(selectors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "call": "security_path_truncate",
        "syscall": False,
        "args": [{"index": 0, "type": "path"}],
        "selectors": list(selectors),
    }


def tcp_connect_hook(selectors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "call": "tcp_connect",
        "syscall": False,
        "args": [{"index": 0, "type": "sock"}],
        "selectors": list(selectors),
    }


def socket_connect_hook(selectors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``security_socket_connect``: an LSM hook, so ``Override`` can refuse the connect.

    Its destination is a ``sockaddr``, for which Tetragon names the target ``SAddr``/``SPort``.
    """
    return {
        "call": "security_socket_connect",
        "syscall": False,
        "args": [
            {"index": 0, "type": "socket"},
            {"index": 1, "type": "sockaddr"},
            {"index": 2, "type": "int"},
        ],
        "selectors": list(selectors),
    }


def int_syscall_hook(
    call: str, arg_types: Sequence[str], selectors: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "call": call,
        "syscall": True,
        "args": [{"index": i, "type": t} for i, t in enumerate(arg_types)],
        "selectors": list(selectors),
    }


def postfix_names(names: Iterable[str]) -> list[str]:
    """``/name`` suffixes: a leading slash keeps ``Postfix`` from matching ``notnmap``."""
    return sorted({"/" + n.strip("/").rsplit("/", 1)[-1] for n in names if n.strip("/")})


def exec_selectors(
    names: Iterable[str], action: list[dict[str, Any]], *, chunk: int = 64
) -> list[dict[str, Any]]:
    values = postfix_names(names)
    return [
        selector(match_args=[match_arg(0, "Postfix", part)], action=action) for part in chunked(values, chunk)
    ]


def file_selectors(
    operator: str,
    paths: Iterable[str],
    action: list[dict[str, Any]],
    *,
    access: int | None = None,
) -> list[dict[str, Any]]:
    """One selector per 8 paths (the kernel's limit for file matches), optionally only for writes/reads."""
    out = []
    for part in chunked(sorted(set(paths)), MAX_FILE_VALUES):
        args = [match_arg(0, operator, part)]
        if access is not None:
            args.append(match_arg(1, "Mask", [access]))
        out.append(selector(match_args=args, action=action))
    return out


def internet_port_selectors(
    ports: Iterable[int],
    action: list[dict[str, Any]],
    *,
    binaries: tuple[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """``tcp_connect`` selectors for these destination ports, towards non-cluster, public addresses only.

    Ports go 4 to a selector (the kernel's limit for integer-style values) and at most 5 selectors
    fit a hook, so more than 20 ports is a caller's bug, refused rather than cut.
    """
    values = sorted(set(ports))
    if len(values) > MAX_INT_VALUES * MAX_SELECTORS:
        raise ValueError(
            f"{len(values)} ports do not fit one hook ({MAX_INT_VALUES * MAX_SELECTORS} at most)"
        )
    return [
        selector(
            match_args=[match_arg(0, "DPort", part), match_arg(0, "NotDAddr", NON_PUBLIC_CIDRS)],
            binaries=binaries,
            action=action,
        )
        for part in chunked(values, MAX_INT_VALUES)
    ]


# The LSM hooks that do what the error-injectable kprobes of the -override policies do, with the
# same arguments (``security_X`` is the kernel's wrapper around LSM hook ``X``).
_LSM_EQUIVALENTS = {
    "security_file_permission": "file_permission",
    "security_path_truncate": "path_truncate",
    "security_socket_connect": "socket_connect",
}


def as_lsm_hooks(kprobes: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The override hooks as ``lsmhooks``, and the calls that have no LSM equivalent.

    ``execve`` becomes ``bprm_check_security``: its ``linux_binprm`` argument is matched on the
    program's path as the syscall's filename was (``Postfix /name``), and refusing it fails the
    exec before the program runs."""
    hooks: list[dict[str, Any]] = []
    left: list[str] = []
    for hook in kprobes:
        call = str(hook.get("call", ""))
        if call in _LSM_EQUIVALENTS:
            hooks.append(
                {"hook": _LSM_EQUIVALENTS[call], "args": hook["args"], "selectors": hook["selectors"]}
            )
        elif call == "sys_execve":
            hooks.append(
                {
                    "hook": "bprm_check_security",
                    "args": [{"index": 0, "type": "linux_binprm"}],
                    "selectors": hook["selectors"],
                }
            )
        else:
            left.append(call)
    return hooks, sorted(set(left))

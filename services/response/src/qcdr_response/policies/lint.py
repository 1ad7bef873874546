"""Blast-radius lint for TracingPolicies: refuse enforcement that would hurt the cluster.

A valid policy can still be a disaster: the original system shipped Sigkill on every
``unshare`` (container runtimes do that), on every shell exec, on any ``openat`` under
``/sys/fs/cgroup/`` (kubelet does that constantly). Only *enforcing* selectors are judged
(Sigkill, Override, Signal, NotifyEnforcer); audit-only selectors are harmless, except that a
``hostSelector`` is always flagged. Each rule has a stable code and says why it refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qcdr_response.policies.targets import ENFORCING_ACTIONS
from qcdr_response.policies.validator import as_list, as_map, selector_is_empty

UNFILTERED = "QCDR-L001"
BROAD_PREFIX = "QCDR-L002"
SHELL_KILL = "QCDR-L003"
NAMESPACE_CALL = "QCDR-L004"
HOST_SELECTOR = "QCDR-L005"
NEGATIVE_ONLY = "QCDR-L006"

HOOK_KINDS = ("kprobes", "tracepoints", "uprobes", "lsmhooks", "usdts", "fentries")
_ARCH_PREFIXES = ("__x64_sys_", "__arm64_sys_", "__ia32_sys_", "__se_sys_", "__do_sys_")
_NAME_PREFIXES = ("sys_enter_", "sys_exit_", "ksys_", "sys_", "security_")
_POSITIVE_BINARY_OPS = frozenset({"In", "Prefix", "Postfix"})
_NEGATIVE_BINARY_OPS = frozenset({"NotIn", "NotPostfix"})
_NEGATIVE_ARG_OPS = frozenset(
    {"NotEqual", "NotPrefix", "NotPostfix", "NotInMap", "NotInRange", "NotSAddr", "NotDAddr", "NotSPort",
     "NotDPort", "NotSportPriv", "NotDPortPriv", "NotFileType"}
)  # fmt: skip
_EXEC_PATH_OPS = frozenset({"Equal", "Postfix", "Prefix"})
_KILLING_ACTIONS = frozenset({"Sigkill", "Signal", "NotifyEnforcer"})
# Where runc, containerd, kubelet and systemd live on common node images.
RUNTIME_DIRS = (
    "/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/", "/usr/local/sbin/", "/usr/libexec/",
    "/usr/lib/systemd/", "/lib/systemd/", "/opt/",
)  # fmt: skip


class LintConfig(BaseModel):
    """What counts as broad, as a runtime, as a shell. Patterns are ``fnmatch`` globs on the
    binary's basename (or on the whole path when the pattern contains a ``/``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_prefix_depth: int = Field(default=2, ge=0, description="/etc/ is depth 1, /etc/cron.d/ depth 2")
    # Path prefixes matched in policies, not files we open (hence the S108 waivers). The second
    # line adds the binary, library, state and log trees: runtimes live there, kubelet and
    # logrotate write there all the time.
    broad_prefixes: tuple[str, ...] = (
        "/", "/home/", "/tmp/", "/var/tmp/", "/dev/shm/",  # noqa: S108
        "/sys/fs/cgroup/", "/proc/", "/etc/", "/usr/", "/var/", "/run/",
        "/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/", "/lib/", "/usr/lib/",
        "/var/lib/", "/var/log/",
    )  # fmt: skip
    runtime_binaries: tuple[str, ...] = (
        "runc", "crun", "containerd", "containerd-shim*", "conmon", "crio", "dockerd", "kubelet", "systemd",
    )  # fmt: skip
    shells_and_interpreters: tuple[str, ...] = (
        "sh", "bash", "dash", "zsh", "ash", "ksh", "busybox", "python*", "perl*", "ruby*", "php*", "node",
        "nodejs",
    )  # fmt: skip
    namespace_sensitive_calls: tuple[str, ...] = (
        "unshare", "setns", "mount", "umount", "umount2", "memfd_create", "clone", "clone3", "pivot_root",
        "fsopen", "fsmount", "move_mount", "open_tree", "mount_setattr", "sb_mount", "create_user_ns",
    )  # fmt: skip
    exec_calls: tuple[str, ...] = (
        "execve", "execveat", "bprm_check", "bprm_check_security", "bprm_creds_for_exec",
        "bprm_creds_from_file", "bprm_committing_creds", "sched_process_exec",
    )  # fmt: skip


@dataclass(frozen=True)
class LintIssue:
    code: str
    path: str
    reason: str


def lint_policy(body: dict[str, Any], config: LintConfig | None = None) -> list[LintIssue]:
    """Reasons to refuse a TracingPolicy's enforcement; ``[]`` means no blast-radius concern."""
    cfg = config or LintConfig()
    spec = as_map(body.get("spec")) if isinstance(body, dict) else None
    if spec is None:
        return []
    out: list[LintIssue] = []
    if spec.get("hostSelector") is not None:
        out.append(
            LintIssue(
                HOST_SELECTOR,
                "spec.hostSelector",
                "hostSelector targets host processes (kubelet, the runtime, systemd): "
                "never acceptable in a generated policy",
            )
        )
    scoped = _workload_scoped(body, spec)
    lists = _lists(spec)
    macros = as_map(spec.get("selectorsMacros")) or {}
    for kind in HOOK_KINDS:
        for i, hook in enumerate(as_list(spec.get(kind)) or []):
            hook_map = as_map(hook)
            if hook_map is None:
                continue
            names = _call_names(hook_map, kind, lists)
            for j, raw in enumerate(as_list(hook_map.get("selectors")) or []):
                selector = _expand_macros(as_map(raw) or {}, macros)
                path = f"spec.{kind}[{i}].selectors[{j}]"
                host = as_map(selector.get("matchWorkloads") or {}) or {}
                if host.get("hostSelector") is not None:
                    out.append(LintIssue(HOST_SELECTOR, f"{path}.matchWorkloads", "selects host processes"))
                if _is_enforcing(selector):
                    out.extend(_lint_selector(selector, names, scoped, path, cfg))
    return out


def _workload_scoped(body: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether the whole policy only applies to selected pods (never to host processes)."""
    if body.get("kind") == "TracingPolicyNamespaced":
        return True
    # An empty selector matches everything (host processes too, before Tetragon 1.7): no scope.
    return any(
        key in spec and not selector_is_empty(spec[key]) for key in ("podSelector", "containerSelector")
    )


def _lists(spec: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in as_list(spec.get("lists")) or []:
        item = as_map(entry) or {}
        if isinstance(item.get("name"), str):
            out[item["name"]] = [str(v) for v in as_list(item.get("values")) or []]
    return out


def bare_call(name: str) -> str:
    """``__x64_sys_setns`` / ``sys_setns`` / ``security_sb_mount`` -> ``setns`` / ``sb_mount``."""
    for prefix in (*_ARCH_PREFIXES, *_NAME_PREFIXES):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _call_names(hook: dict[str, Any], kind: str, lists: dict[str, list[str]]) -> set[str]:
    raw = {
        "tracepoints": str(hook.get("event", "")),
        "lsmhooks": str(hook.get("hook", "")),
    }.get(kind, str(hook.get("call", "")))
    names = lists.get(raw[len("list:") :], []) if raw.startswith("list:") else [raw]
    # raw_syscalls tracepoints select syscalls by number through InMap on a list.
    for selector in as_list(hook.get("selectors")) or []:
        for arg in as_list((as_map(selector) or {}).get("matchArgs")) or []:
            for value in as_list((as_map(arg) or {}).get("values")) or []:
                if isinstance(value, str) and value.startswith("list:"):
                    names = [*names, *lists.get(value[len("list:") :], [])]
    return {bare_call(n) for n in names if n}


def _expand_macros(selector: dict[str, Any], macros: dict[str, Any]) -> dict[str, Any]:
    names = as_list(selector.get("macros")) or []
    if not names:
        return selector
    merged = dict(selector)
    for name in names:
        for key, value in (as_map(macros.get(name)) or {}).items():
            merged[key] = [*(as_list(merged.get(key)) or []), *(as_list(value) or [])]
    return merged


def _actions(selector: dict[str, Any]) -> set[str]:
    return {
        str((as_map(action) or {}).get("action"))
        for key in ("matchActions", "matchReturnActions")
        for action in as_list(selector.get(key)) or []
    }


def _is_enforcing(selector: dict[str, Any]) -> bool:
    return bool(_actions(selector) & ENFORCING_ACTIONS)


def _entries(selector: dict[str, Any], *keys: str) -> Iterator[dict[str, Any]]:
    for key in keys:
        for entry in as_list(selector.get(key)) or []:
            entry_map = as_map(entry)
            if entry_map is not None:
                yield entry_map


def _values(entry: dict[str, Any]) -> list[str]:
    return [v for v in as_list(entry.get("values")) or [] if isinstance(v, str)]


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    base = value.rstrip("/").rsplit("/", 1)[-1]
    return any(fnmatchcase(value if "/" in p else base, p) for p in patterns)


def _names_shell(value: str, operator: str, shells: tuple[str, ...]) -> bool:
    if _matches(value, shells):
        return True
    # A Postfix without '/' matches any name ending with it ("sh" hits bash, zsh, dash...).
    return (
        operator == "Postfix"
        and not value.startswith("/")
        and any(s.rstrip("*").endswith(value) for s in shells)
    )


def _lint_selector(
    selector: dict[str, Any], names: set[str], policy_scoped: bool, path: str, cfg: LintConfig
) -> list[LintIssue]:
    out: list[LintIssue] = []
    args = list(_entries(selector, "matchArgs", "matchData", "matchReturnArgs"))
    binaries = list(_entries(selector, "matchBinaries"))
    parents = list(_entries(selector, "matchParentBinaries"))
    scoped = policy_scoped or bool(selector.get("matchNamespaces"))
    if not args and not binaries and not parents:
        where = (
            "in every selected workload"
            if scoped
            else "on every node (host processes and the container runtime included)"
        )
        out.append(
            LintIssue(
                UNFILTERED,
                path,
                f"enforcement with no matchBinaries and no matchArgs filter hits every caller of "
                f"{_describe(names)} {where}",
            )
        )
    out.extend(_broad_prefixes(selector, path, cfg))
    kills = bool(_actions(selector) & _KILLING_ACTIONS)
    out.extend(_shell_kill(args, binaries, parents, names, scoped, kills, path, cfg))
    if names & set(cfg.namespace_sensitive_calls) and not scoped:
        problem = _runtime_exclusion_problem(binaries, cfg)
        if problem:
            out.append(
                LintIssue(
                    NAMESPACE_CALL,
                    path,
                    f"enforcement on {', '.join(sorted(names & set(cfg.namespace_sensitive_calls)))} hits "
                    f"container runtimes and node agents, which use these calls all the time: {problem}, "
                    "or scope the policy to workloads "
                    "(TracingPolicyNamespaced, podSelector, matchNamespaces)",
                )
            )
    # "Everything except X" is no narrower than no filter at all.
    negative_args = all(str(a.get("operator")) in _NEGATIVE_ARG_OPS for a in args)
    negative_bins = all(str(b.get("operator")) in _NEGATIVE_BINARY_OPS | {"NotPrefix"} for b in binaries)
    if (args or binaries) and negative_args and negative_bins and not parents and not scoped:
        out.append(
            LintIssue(
                NEGATIVE_ONLY,
                path,
                "every filter is a negation, so this kills every process on every node except the listed "
                "values; add a positive filter or scope it to workloads",
            )
        )
    return out


def _describe(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "the hook"


def _broad_prefixes(selector: dict[str, Any], path: str, cfg: LintConfig) -> list[LintIssue]:
    out = []
    for key in ("matchArgs", "matchData", "matchBinaries", "matchParentBinaries"):
        for k, entry in enumerate(_entries(selector, key)):
            if entry.get("operator") != "Prefix":
                continue
            problems = [
                f"{value!r} {why}" for value in _values(entry) if (why := _prefix_problem(value, cfg))
            ]
            if problems:
                out.append(LintIssue(BROAD_PREFIX, f"{path}.{key}[{k}]", "Prefix " + "; ".join(problems)))
    return out


def _prefix_problem(value: str, cfg: LintConfig) -> str | None:
    if value and not value.startswith("/"):
        return None  # not a path (a relative path never matches a resolved one)
    as_dir = value if value.endswith("/") else value + "/"
    if any(p == as_dir or p.startswith(value) for p in cfg.broad_prefixes):
        return "covers a whole system tree that the kubelet, the runtime and ordinary programs use constantly"
    depth = len([part for part in value.split("/") if part])
    if depth < cfg.min_prefix_depth:
        return (
            f"is only {depth} level(s) deep (minimum {cfg.min_prefix_depth}): it matches far too many paths"
        )
    return None


def _shell_kill(
    args: list[dict[str, Any]],
    binaries: list[dict[str, Any]],
    parents: list[dict[str, Any]],
    names: set[str],
    scoped: bool,
    kills: bool,
    path: str,
    cfg: LintConfig,
) -> list[LintIssue]:
    """Denying every shell exec is an outage; so is killing shells for what they do (an Override
    that only denies the shell one operation is not flagged by the second rule)."""
    shells = cfg.shells_and_interpreters
    if scoped or any(p.get("operator") in _POSITIVE_BINARY_OPS for p in parents):
        return []
    exec_kill = bool(names & set(cfg.exec_calls)) and any(
        a.get("operator") in _EXEC_PATH_OPS
        and any(_names_shell(v, str(a.get("operator")), shells) for v in _values(a))
        for a in args
    )
    shell_binary = any(
        b.get("operator") in ("In", "Postfix")
        and any(_names_shell(v, str(b.get("operator")), shells) for v in _values(b))
        for b in binaries
    )
    # For an exec, matchBinaries is the caller (the parent of the new program): a scope.
    parent_scope = any(
        b.get("operator") in _POSITIVE_BINARY_OPS and not all(_matches(v, shells) for v in _values(b))
        for b in binaries
    )
    if exec_kill and not parent_scope:
        return [
            LintIssue(
                SHELL_KILL,
                path,
                "kills every exec of a shell/interpreter on every node (entrypoints, probes, kubectl exec, "
                "node scripts): restrict the parent (matchBinaries of the caller / matchParentBinaries) "
                "or scope it to workloads",
            )
        ]
    if shell_binary and kills:
        return [
            LintIssue(
                SHELL_KILL,
                path,
                "kills shells/interpreters doing this anywhere: "
                "add matchParentBinaries or scope it to workloads",
            )
        ]
    return []


def _runtime_exclusion_problem(binaries: list[dict[str, Any]], cfg: LintConfig) -> str | None:
    runtimes = cfg.runtime_binaries
    for entry in binaries:
        operator = entry.get("operator")
        values = _values(entry)
        if operator in _POSITIVE_BINARY_OPS and values:
            hits = [
                v for v in values if _matches(v, runtimes) or (operator == "Prefix" and _holds_runtimes(v))
            ]
            return (
                f"the selected binaries include runtimes or their directories ({', '.join(hits)})"
                if hits
                else None
            )
        if operator in _NEGATIVE_BINARY_OPS:
            missing = [r for r in runtimes if not any(_matches(v, (r,)) for v in values)]
            return f"matchBinaries {operator} does not exclude {', '.join(missing)}" if missing else None
    return "exclude them with matchBinaries NotIn (" + ", ".join(runtimes) + ")"


def _holds_runtimes(prefix: str) -> bool:
    """Whether a binary Prefix may contain runtime binaries (it overlaps a directory they live in)."""
    return any(d.startswith(prefix) or prefix.startswith(d) for d in RUNTIME_DIRS)

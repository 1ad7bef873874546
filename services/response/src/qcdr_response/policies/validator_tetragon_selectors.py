"""Tetragon selectors: per-selector limits, process filters (binaries, PIDs, namespaces,
capabilities) and actions. Argument filters are in ``validator_tetragon_values``."""

from __future__ import annotations

import re
from typing import Any

from qcdr_response.policies import targets as tg
from qcdr_response.policies.targets import CAPABILITIES, TetragonTarget
from qcdr_response.policies.validator import Issues, as_list, as_map, is_int
from qcdr_response.policies.validator import TetragonCode as C
from qcdr_response.policies.validator_tetragon_values import (
    MAX_POSTFIX_LEN,
    MAX_PREFIX_LEN,
    FilterKind,
    HookContext,
    check_filter,
)

MAX_SELECTORS = 5
MAX_ARG_FILTERS = 5  # matchArgs + matchData, kernels with large programs (>= 5.3)
MAX_ACTIONS = 3
MAX_PIDS = 4
MAX_NAMESPACE_VALUES = 4
MAX_NAMESPACE_FILTERS = 10
MAX_BINARY_PATH = 255  # BINARY_PATH_MAX_LEN - 1

BINARY_OPERATORS = frozenset({"In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"})
NAMESPACES = frozenset(
    {"Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time", "TimeForChildren", "Cgroup", "User"}
)
_NAMESPACES_LOWER = {n.lower() for n in NAMESPACES}
CAPABILITY_SETS = frozenset({"Effective", "Inheritable", "Permitted"})
ACTION_FIELDS = frozenset(
    {
        "action", "argError", "argFqdn", "argIndex", "argNewAddr", "argNewOffset", "argNewSymbol",
        "argRegs", "argSig", "argSock", "argUrl", "argValue", "imaHash", "kernelStackTrace",
        "rateLimit", "rateLimitScope", "userStackTrace",
        "argFd", "argName",  # FollowFD/CopyFD, still in the 1.4-1.7 CRDs
    }
)  # fmt: skip
_POST_ONLY = ("rateLimit", "kernelStackTrace", "userStackTrace", "imaHash")
_RATE_LIMIT = re.compile(r"[0-9]+[smhSMH]?")
_UPROBE_OVERRIDE_FIELDS = ("argRegs", "argNewSymbol", "argNewAddr", "argNewOffset")
_OVERRIDE_HOOKS = frozenset({"kprobes", "lsmhooks", "uprobes", "fentries"})
_FILTER_KINDS: tuple[FilterKind, ...] = ("matchArgs", "matchData", "matchReturnArgs")


def check_selectors(raw: Any, ctx: HookContext, path: str, issues: Issues, target: TetragonTarget) -> None:
    selectors = as_list(raw)
    if selectors is None:
        issues.error(path, C.STRUCTURE, "selectors must be a list")
        return
    if len(selectors) > MAX_SELECTORS:
        issues.error(
            path,
            C.LIMIT,
            f"{len(selectors)} selectors: Tetragon accepts at most {MAX_SELECTORS} per hook "
            "(split the hook into several policies or merge values into one selector)",
        )
    for i, raw_selector in enumerate(selectors):
        _check_selector(raw_selector, ctx, f"{path}[{i}]", issues, target)


def _check_selector(raw: Any, ctx: HookContext, path: str, issues: Issues, target: TetragonTarget) -> None:
    selector = as_map(raw)
    if selector is None:
        issues.error(path, C.STRUCTURE, "each selector must be a map")
        return
    for key in selector:
        requirement = tg.SELECTOR_FIELDS.get(key)
        if requirement is None:
            issues.error(f"{path}.{key}", C.STRUCTURE, f"unknown selector field {key!r}")
            continue
        unmet = target.unmet(requirement, f"selector field {key}")
        if unmet:
            issues.error(f"{path}.{key}", C.KERNEL if unmet.kind == "kernel" else C.VERSION, unmet.message)
    filters = 0
    for kind in _FILTER_KINDS:
        entries = selector.get(kind)
        if entries is None:
            continue
        entry_list = as_list(entries)
        if entry_list is None:
            issues.error(f"{path}.{kind}", C.STRUCTURE, f"{kind} must be a list")
            continue
        if kind != "matchReturnArgs":
            filters += len(entry_list)
        elif len(entry_list) > MAX_ARG_FILTERS:
            issues.error(f"{path}.{kind}", C.LIMIT, f"at most {MAX_ARG_FILTERS} matchReturnArgs per selector")
        for j, entry in enumerate(entry_list):
            check_filter(entry, kind, ctx, f"{path}.{kind}[{j}]", issues, target)
    if filters > MAX_ARG_FILTERS:
        issues.error(
            path,
            C.LIMIT,
            f"{filters} matchArgs+matchData filters: Tetragon accepts at most {MAX_ARG_FILTERS}",
        )
    for binaries in ("matchBinaries", "matchParentBinaries"):
        if binaries in selector:
            _check_binaries(selector[binaries], binaries, f"{path}.{binaries}", issues)
    if "matchPIDs" in selector:
        _check_pids(selector["matchPIDs"], f"{path}.matchPIDs", issues)
    if "matchNamespaces" in selector:
        _check_namespaces(selector["matchNamespaces"], f"{path}.matchNamespaces", issues)
    if "matchNamespaceChanges" in selector:
        _check_namespace_changes(selector["matchNamespaceChanges"], f"{path}.matchNamespaceChanges", issues)
    for caps in ("matchCapabilities", "matchCapabilityChanges"):
        if caps in selector:
            _check_capabilities(selector[caps], f"{path}.{caps}", issues)
    for actions in ("matchActions", "matchReturnActions"):
        if actions in selector:
            if actions == "matchReturnActions" and not ctx.returns:
                issues.warn(
                    f"{path}.{actions}", C.HOOK, "matchReturnActions never run without `return: true`"
                )
            _check_actions(selector[actions], ctx, f"{path}.{actions}", issues, target)


def _check_binaries(raw: Any, kind: str, path: str, issues: Issues) -> None:
    entries = as_list(raw)
    if entries is None:
        issues.error(
            path,
            C.BINARIES,
            f"{kind} must be a list with one {{operator, values}} entry; a map is rejected by the CRD",
        )
        return
    if len(entries) > 1:
        issues.error(
            path,
            C.BINARIES,
            f"{len(entries)} {kind} entries: only one is allowed per selector (put every path into "
            "its values, or use another selector)",
        )
    for i, raw_entry in enumerate(entries):
        epath = f"{path}[{i}]"
        entry = as_map(raw_entry)
        if entry is None:
            issues.error(epath, C.BINARIES, "each entry must be a map with operator and values")
            continue
        for key in entry:
            if key not in ("operator", "values", "followChildren"):
                issues.error(f"{epath}.{key}", C.STRUCTURE, f"unknown field {key!r} in {kind}")
        operator = entry.get("operator")
        if operator not in BINARY_OPERATORS:
            issues.error(epath, C.BINARIES, f"operator {operator!r} is not one of {sorted(BINARY_OPERATORS)}")
            continue
        if entry.get("followChildren") and operator not in ("In", "NotIn"):
            issues.error(epath, C.BINARIES, "followChildren only works with In/NotIn")
        values = as_list(entry.get("values"))
        if values is None:
            issues.error(f"{epath}.values", C.BINARIES, "values must be a list of paths")
            continue
        if not values:
            issues.warn(f"{epath}.values", C.BINARIES, f"an empty {kind} entry is ignored by the agent")
        for j, value in enumerate(values):
            _check_binary_value(value, str(operator), f"{epath}.values[{j}]", issues)


def _check_binary_value(value: Any, operator: str, path: str, issues: Issues) -> None:
    if not isinstance(value, str) or not value:
        issues.error(path, C.BINARIES, "binary values must be non-empty strings")
        return
    limit = {"Prefix": MAX_PREFIX_LEN, "NotPrefix": MAX_PREFIX_LEN}.get(operator, MAX_BINARY_PATH)
    if operator in ("Postfix", "NotPostfix"):
        limit = MAX_POSTFIX_LEN
    if len(value.encode()) > limit:
        issues.error(
            path, C.BINARIES, f"{len(value.encode())} bytes: {operator} binary values are limited to {limit}"
        )
    if "*" in value:
        issues.error(
            path, C.STRING_MATCH, f"{value!r}: '*' is matched literally, binaries take literal paths"
        )
    if operator in ("In", "NotIn", "Prefix", "NotPrefix") and not value.startswith("/"):
        issues.warn(path, C.SEMANTICS, f"{value!r} is not absolute: binaries are matched by full path")
    if operator in ("Postfix", "NotPostfix") and not value.startswith("/"):
        issues.warn(
            path,
            C.SEMANTICS,
            f"{value!r} has no leading '/': it matches any binary whose path merely ends with it",
        )


def _entries(raw: Any, path: str, issues: Issues, what: str) -> list[tuple[str, dict[str, Any]]]:
    entries = as_list(raw)
    if entries is None:
        issues.error(path, C.STRUCTURE, f"{what} must be a list")
        return []
    out = []
    for i, entry in enumerate(entries):
        entry_map = as_map(entry)
        if entry_map is None:
            issues.error(f"{path}[{i}]", C.STRUCTURE, f"each {what} entry must be a map")
            continue
        if entry_map.get("operator") not in ("In", "NotIn"):
            issues.error(f"{path}[{i}]", C.PROCESS_FILTER, f"{what} supports only the In and NotIn operators")
        out.append((f"{path}[{i}]", entry_map))
    return out


def _check_pids(raw: Any, path: str, issues: Issues) -> None:
    for epath, entry in _entries(raw, path, issues, "matchPIDs"):
        values = as_list(entry.get("values")) or []
        if not values or not all(is_int(v) and v >= 0 for v in values):
            issues.error(
                f"{epath}.values", C.PROCESS_FILTER, "matchPIDs values must be a non-empty list of PIDs"
            )
        if len(values) > MAX_PIDS:
            issues.error(
                f"{epath}.values", C.LIMIT, f"{len(values)} PIDs: at most {MAX_PIDS} per matchPIDs entry"
            )


def _check_namespaces(raw: Any, path: str, issues: Issues) -> None:
    entries = _entries(raw, path, issues, "matchNamespaces")
    if len(entries) > MAX_NAMESPACE_FILTERS:
        issues.error(path, C.LIMIT, f"at most {MAX_NAMESPACE_FILTERS} matchNamespaces filters per selector")
    for epath, entry in entries:
        if entry.get("namespace") not in NAMESPACES:
            issues.error(
                epath,
                C.PROCESS_FILTER,
                f"namespace {entry.get('namespace')!r} is not one of {sorted(NAMESPACES)}",
            )
        values = as_list(entry.get("values")) or []
        if not values:
            issues.error(
                f"{epath}.values", C.PROCESS_FILTER, "matchNamespaces needs values (inode numbers or host_ns)"
            )
        if len(values) > MAX_NAMESPACE_VALUES:
            issues.error(
                f"{epath}.values",
                C.LIMIT,
                f"{len(values)} values: matchNamespaces takes at most {MAX_NAMESPACE_VALUES}",
            )
        for j, value in enumerate(values):
            if not (isinstance(value, str) and (value == "host_ns" or (value.isascii() and value.isdigit()))):
                issues.error(
                    f"{epath}.values[{j}]", C.VALUE, f"{value!r}: use a namespace inode number or host_ns"
                )


def _check_namespace_changes(raw: Any, path: str, issues: Issues) -> None:
    entries = _entries(raw, path, issues, "matchNamespaceChanges")
    if len(entries) > 1:
        issues.error(path, C.LIMIT, "matchNamespaceChanges supports a single filter")
    for epath, entry in entries:
        for j, value in enumerate(as_list(entry.get("values")) or []):
            if str(value).lower() not in _NAMESPACES_LOWER:
                issues.error(f"{epath}.values[{j}]", C.VALUE, f"{value!r} is not a namespace type")


def _check_capabilities(raw: Any, path: str, issues: Issues) -> None:
    for epath, entry in _entries(raw, path, issues, "capability filter"):
        if entry.get("type", "Effective") not in CAPABILITY_SETS:
            issues.error(epath, C.PROCESS_FILTER, f"type must be one of {sorted(CAPABILITY_SETS)}")
        values = as_list(entry.get("values")) or []
        if not values:
            issues.error(f"{epath}.values", C.PROCESS_FILTER, "a capability filter needs values")
        for j, value in enumerate(values):
            if str(value).strip().upper() not in CAPABILITIES:
                issues.error(
                    f"{epath}.values[{j}]", C.VALUE, f"{value!r} is not a Linux capability (CAP_...)"
                )


def _check_actions(raw: Any, ctx: HookContext, path: str, issues: Issues, target: TetragonTarget) -> None:
    actions = as_list(raw)
    if actions is None:
        issues.error(path, C.STRUCTURE, "actions must be a list")
        return
    if len(actions) > MAX_ACTIONS:
        issues.error(
            path, C.LIMIT, f"{len(actions)} actions: Tetragon accepts at most {MAX_ACTIONS} per selector"
        )
    for i, raw_action in enumerate(actions):
        apath = f"{path}[{i}]"
        action = as_map(raw_action)
        if action is None or not isinstance(action.get("action"), str):
            issues.error(apath, C.ACTION, "each action must be a map with an `action` name")
            continue
        _check_action(action, ctx, apath, issues, target)


def _check_action(
    action: dict[str, Any], ctx: HookContext, path: str, issues: Issues, target: TetragonTarget
) -> None:
    name = str(action["action"])
    requirement = tg.ACTIONS.get(name)
    if requirement is None:
        issues.error(path, C.ACTION, f"unknown action {name!r} (valid: {', '.join(sorted(tg.ACTIONS))})")
        return
    unmet = target.unmet(requirement, f"action {name}")
    if unmet:
        issues.error(path, C.KERNEL if unmet.kind == "kernel" else C.VERSION, unmet.message)
    elif name in tg.DEPRECATED_FD_ACTIONS:
        issues.warn(path, C.DEPRECATED, f"{name} is deprecated since Tetragon 1.4 and removed after 1.7")
    for key in action:
        if key not in ACTION_FIELDS:
            issues.error(f"{path}.{key}", C.STRUCTURE, f"unknown action field {key!r}")
    for key in _POST_ONLY:
        if action.get(key) and name != "Post":
            issues.error(f"{path}.{key}", C.ACTION, f"{key} is only valid with the Post action")
    if action.get("rateLimitScope") is not None and not action.get("rateLimit"):
        issues.error(f"{path}.rateLimitScope", C.RATE_LIMIT, "rateLimitScope needs a rateLimit")
    if action.get("rateLimit") is not None:
        _check_rate_limit(action, path, issues)
    if action.get("imaHash"):
        if ctx.kind != "lsmhooks":
            issues.error(f"{path}.imaHash", C.ACTION, "imaHash is only available on LSM hooks")
        unmet = target.unmet(tg.IMA_HASH, "imaHash")
        if unmet:
            issues.error(f"{path}.imaHash", C.KERNEL, unmet.message)
    if name == "Override":
        _check_override(action, ctx, path, issues, target)
    elif name == "Signal" and not (is_int(action.get("argSig")) and 0 < action["argSig"] <= 64):
        issues.error(path, C.ACTION, "Signal needs argSig, a signal number 1-64")
    elif name == "GetUrl" and not str(action.get("argUrl", "")).startswith(("http://", "https://")):
        issues.error(path, C.ACTION, "GetUrl needs argUrl, an http(s) URL")
    elif name == "DnsLookup" and not action.get("argFqdn"):
        issues.error(path, C.ACTION, "DnsLookup needs argFqdn")
    elif name == "NotifyEnforcer" and not ctx.has_enforcers:
        issues.error(path, C.ACTION, "NotifyEnforcer needs an `enforcers` entry in the spec")
    elif name == "Set":
        if ctx.kind != "usdts":
            issues.error(path, C.ACTION, "Set writes a USDT argument and only works on usdts")
        if not (is_int(action.get("argIndex")) and is_int(action.get("argValue"))):
            issues.error(path, C.ACTION, "Set needs argIndex and argValue")
    if name in tg.ENFORCING_ACTIONS and ctx.kind == "fentries":
        unmet = target.unmet(tg.FENTRY_ENFORCEMENT, f"{name} on fentries")
        if unmet:
            issues.error(path, C.VERSION, unmet.message)


def _check_override(
    action: dict[str, Any], ctx: HookContext, path: str, issues: Issues, target: TetragonTarget
) -> None:
    if ctx.kind not in _OVERRIDE_HOOKS:
        issues.error(
            path,
            C.ACTION,
            f"Override is not supported on {ctx.kind} (use NotifyEnforcer with an enforcer for tracepoints)",
        )
        return
    uprobe_fields = [f for f in _UPROBE_OVERRIDE_FIELDS if action.get(f) is not None]
    if uprobe_fields:
        if ctx.kind != "uprobes":
            issues.error(path, C.ACTION, f"{', '.join(uprobe_fields)} only apply to uprobe overrides")
        unmet = target.unmet(tg.UPROBE_OVERRIDE, "uprobe register/call override")
        if unmet:
            issues.error(path, C.KERNEL if unmet.kind == "kernel" else C.VERSION, unmet.message)
        if len([f for f in uprobe_fields if f != "argRegs"]) > 1:
            issues.error(path, C.ACTION, "use at most one of argNewSymbol, argNewAddr and argNewOffset")
        return
    if not is_int(action.get("argError")):
        issues.error(path, C.ACTION, "Override needs argError, the (negative errno) return value to inject")
    if ctx.kind == "kprobes" and not _overridable(ctx.call):
        issues.warn(
            path,
            C.SEMANTICS,
            f"Override on {ctx.call!r} only loads if the function is error-injectable "
            "(syscalls, security_* hooks, ALLOW_ERROR_INJECTION); prefer an LSM hook",
        )


def _overridable(call: str) -> bool:
    name = call.rsplit("sys_", 1)[-1] if "sys_" in call else call
    return "sys_" in call or call.startswith(("security_", "list:")) or name.startswith("should_")


def _check_rate_limit(action: dict[str, Any], path: str, issues: Issues) -> None:
    value = action["rateLimit"]
    if not isinstance(value, str) or not _RATE_LIMIT.fullmatch(value):
        issues.error(
            f"{path}.rateLimit",
            C.RATE_LIMIT,
            f"rateLimit {value!r} must be a number with an optional s/m/h suffix",
        )
    elif int(value.rstrip("smhSMH")) >= 2**32:
        issues.error(f"{path}.rateLimit", C.RATE_LIMIT, f"rateLimit {value!r} does not fit 32 bits")
    scope = action.get("rateLimitScope")
    if scope is not None and scope not in ("thread", "process", "global"):
        issues.error(
            f"{path}.rateLimitScope", C.RATE_LIMIT, "rateLimitScope must be thread, process or global"
        )

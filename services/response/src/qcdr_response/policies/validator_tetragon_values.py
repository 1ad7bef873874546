"""Tetragon ``matchArgs`` / ``matchData`` / ``matchReturnArgs``: which argument, which operator, which values.

Mirrors what ``pkg/selectors/kernel.go`` does when the agent loads a policy: resolve the
filtered argument, check the operator against the argument type, then parse every value the
way the agent will (Go ``strconv`` integers, ``net.ParseCIDR`` addresses, port ranges, ...).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from qcdr_response.policies import targets as tg
from qcdr_response.policies.targets import (
    CAPABILITIES,
    FAMILIES,
    FILE_TYPES,
    PROTOCOLS,
    TCP_STATES,
    TetragonTarget,
)
from qcdr_response.policies.validator import Issues, as_list, as_map, is_int
from qcdr_response.policies.validator import TetragonCode as C

MAX_INT_VALUES = 4  # MAX_MATCH_VALUES in bpf/process/types/basic.h
MAX_PREFIX_LEN = 256  # StringPrefixMaxLength
MAX_POSTFIX_LEN = 127  # StringPostfixMaxLength - 1 (reverse copy in BPF)
MAX_SUBSTRING_LEN = 99  # "Substring is bigger than 100 chars" is raised at len >= 100

FilterKind = Literal["matchArgs", "matchData", "matchReturnArgs"]


@dataclass(frozen=True)
class HookContext:
    """What the selector checks need to know about the hook they sit in."""

    kind: str  # kprobes, tracepoints, uprobes, lsmhooks, usdts, fentries
    call: str  # call / event / hook / symbol, for messages and call-specific rules
    args: tuple[dict[str, Any], ...]  # well-formed `args` entries (int index, str type)
    data: tuple[dict[str, Any], ...]
    return_arg: dict[str, Any] | None
    returns: bool
    list_names: frozenset[str]
    has_enforcers: bool


# Signed/unsigned widths pkg/selectors parses Equal/Mask/GT/LT values with.
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(["int", "int32", "sint32", "size_t"], (-(2**31), 2**31 - 1)),
    "uint32": (0, 2**32 - 1),
    **dict.fromkeys(["long", "int64", "sint64", "syscall64"], (-(2**63), 2**63 - 1)),
    **dict.fromkeys(["ulong", "uint64"], (0, 2**64 - 1)),
    **dict.fromkeys(["int8", "sint8"], (-(2**7), 2**7 - 1)),
    "uint8": (0, 2**8 - 1),
    **dict.fromkeys(["int16", "sint16"], (-(2**15), 2**15 - 1)),
    "uint16": (0, 2**16 - 1),
}
_DECIMAL = re.compile(r"^[+-]?\d+$")
_GO_OCTAL = re.compile(r"^[+-]?0[0-7_]+$")
# Common symbolic constants people write instead of numbers, for a helpful hint.
_SYMBOL_HINTS = {
    "O_RDONLY": 0,
    "O_WRONLY": 1,
    "O_RDWR": 2,
    "O_CREAT": 64,
    "O_EXCL": 128,
    "O_TRUNC": 512,
    "O_APPEND": 1024,
    "SOCK_STREAM": 1,
    "SOCK_DGRAM": 2,
    "SOCK_RAW": 3,
    "CLONE_NEWNS": 0x20000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# Operators people reach for that Tetragon does not have, with what to use instead.
_OPERATOR_HINTS = {
    "Contains": "use SubString (Tetragon >= 1.7 on kernel >= 6.17) or Prefix/Postfix",
    "In": "matchArgs has no In: use Equal (strings) or InMap (integers)",
    "NotIn": "matchArgs has no NotIn: use NotEqual (strings) or NotInMap (integers)",
    "IsSocket": "use FileType with value 'socket' on a file/path argument (Tetragon >= 1.7)",
    "Regex": "Tetragon has no in-kernel regex: use Prefix/Postfix/SubString",
}


def parse_go_int(text: str, *, base0: bool) -> int | None:
    """Parse like Go's strconv: base 0 accepts 0x/0o/0b prefixes and leading-0 octal."""
    value = text.strip()
    if not value or not value.isascii():  # Python's int() also reads other scripts' digits; Go does not
        return None
    if not base0:
        return int(value) if _DECIMAL.match(value) else None
    if _GO_OCTAL.match(value):
        return int(value.replace("_", ""), 8)
    try:
        return int(value, 0)
    except ValueError:
        return None


def _not_an_int(value: str) -> str:
    hint = _SYMBOL_HINTS.get(value.strip())
    if hint is not None:
        return f"{value!r} is not an integer: Tetragon does not resolve symbolic constants, write {hint}"
    if "|" in value:
        return f"{value!r} is not an integer: combine flags into one number (Mask matches any set bit)"
    return f"{value!r} is not an integer (symbolic constants are not resolved by Tetragon)"


def resolve_argument(
    entry: dict[str, Any], kind: FilterKind, ctx: HookContext, path: str, issues: Issues
) -> str | None:
    """The type of the argument a filter applies to, or None (after reporting) if there is none."""
    positions = entry.get("args")
    if kind == "matchReturnArgs":
        if ctx.return_arg is None or not ctx.returns:
            issues.error(path, C.HOOK, "matchReturnArgs needs `return: true` and a returnArg on the hook")
            return None
        signature: tuple[dict[str, Any], ...] = (ctx.return_arg,)
    else:
        signature = ctx.args if kind == "matchArgs" else ctx.data
    if positions is not None:
        # `args:` (e.g. for CapabilitiesGained) index the spec's list by position.
        plist = as_list(positions)
        if not plist or not all(is_int(p) and 0 <= p < len(signature) for p in plist):
            issues.error(
                path,
                C.ARG_REF,
                f"args {positions!r} must be positions in the {len(signature)} declared arguments",
            )
            return None
        return str(signature[plist[0]].get("type"))
    index = entry.get("index", 0)
    if not is_int(index):
        issues.error(path, C.STRUCTURE, "index must be an integer")
        return None
    if kind == "matchData" or ctx.kind == "tracepoints":
        # matchData and tracepoint filters address the declared list by position.
        if 0 <= index < len(signature):
            return str(signature[index].get("type"))
        where = "data" if kind == "matchData" else "args"
        issues.error(
            path, C.ARG_REF, f"{kind} index {index} is past the {len(signature)} entries of `{where}`"
        )
        return None
    for spec in signature:
        if spec.get("index", 0) == index:
            return str(spec.get("type"))
    declared = sorted(int(s.get("index", 0)) for s in signature)
    issues.error(
        path,
        C.ARG_REF,
        f"{kind} index {index} refers to no declared argument (declared indexes: {declared}); the "
        "agent rejects the policy with 'argFilter for unknown index'",
    )
    return None


def check_filter(
    entry_raw: Any, kind: FilterKind, ctx: HookContext, path: str, issues: Issues, target: TetragonTarget
) -> None:
    entry = as_map(entry_raw)
    if entry is None:
        issues.error(path, C.STRUCTURE, f"each {kind} entry must be a map with index, operator and values")
        return
    for key in entry:
        if key not in ("index", "operator", "values", "args"):
            issues.error(f"{path}.{key}", C.STRUCTURE, f"unknown field {key!r} in {kind}")
    operator = entry.get("operator")
    if not isinstance(operator, str) or operator not in tg.MATCH_ARG_OPERATORS:
        hint = _OPERATOR_HINTS.get(
            str(operator), f"valid operators: {', '.join(sorted(tg.MATCH_ARG_OPERATORS))}"
        )
        issues.error(path, C.OPERATOR, f"{operator!r} is not a Tetragon matchArgs operator ({hint})")
        return
    _version(tg.OPERATORS[operator], f"operator {operator}", path, issues, target)
    arg_type = resolve_argument(entry, kind, ctx, path, issues)
    values = _string_values(entry, path, issues)
    if arg_type is None or values is None or arg_type == "auto":
        # "auto" takes its type from BTF at load time: nothing to check against here.
        return
    if arg_type not in tg.ARG_TYPES:
        return  # the unknown type is reported where the argument is declared
    allowed = tg.operators_for(arg_type)
    if operator not in allowed:
        issues.error(path, C.OPERATOR, _operator_type_message(operator, arg_type, allowed))
        return
    special = tg.OPERATOR_TYPE_REQUIREMENTS.get((operator, arg_type))
    if special:
        _version(special, f"operator {operator} on {arg_type}", path, issues, target)
    if operator == "CapabilitiesGained":
        _check_caps_gained(entry, ctx, path, issues)
        return
    if operator == "CelExpr":
        return
    if not values and operator not in tg.PRIV_PORT_OPS:
        issues.error(path, C.VALUE, f"{operator} needs at least one value")
        return
    _check_values(operator, arg_type, values, ctx, path, issues)


def _version(req: tg.Requirement, feature: str, path: str, issues: Issues, target: TetragonTarget) -> None:
    unmet = target.unmet(req, feature)
    if unmet is not None:
        issues.error(path, C.KERNEL if unmet.kind == "kernel" else C.VERSION, unmet.message)


def _string_values(entry: dict[str, Any], path: str, issues: Issues) -> list[str] | None:
    raw = entry.get("values", [])
    values = as_list(raw)
    if values is None:
        issues.error(f"{path}.values", C.STRUCTURE, "values must be a list of strings")
        return None
    for i, value in enumerate(values):
        if not isinstance(value, str):
            issues.error(
                f"{path}.values[{i}]",
                C.STRUCTURE,
                f"value {value!r} must be a string (quote numbers in YAML)",
            )
    return [str(v) for v in values]


def _operator_type_message(operator: str, arg_type: str, allowed: frozenset[str]) -> str:
    if not allowed:
        return f"arguments of type {arg_type} cannot be filtered in the kernel (no operator applies)"
    message = (
        f"operator {operator} does not apply to a {arg_type} argument (allowed: {', '.join(sorted(allowed))})"
    )
    if arg_type == tg.SOCKADDR:
        message += (
            "; sockaddr only supports [Not]SAddr, [Not]SPort[Priv] and Family: for connect() the "
            "sockaddr is the peer, so use SAddr/SPort, or hook tcp_connect with a sock argument "
            "for DAddr/DPort"
        )
    return message


def _check_caps_gained(entry: dict[str, Any], ctx: HookContext, path: str, issues: Issues) -> None:
    positions = as_list(entry.get("args"))
    if not positions or len(positions) != 2:
        issues.error(path, C.VALUE, "CapabilitiesGained needs args: [new, old] (two capability arguments)")
        return
    types = {str(ctx.args[p].get("type")) for p in positions if is_int(p) and 0 <= p < len(ctx.args)}
    if not types <= tg.CAP_TYPES:
        issues.error(path, C.OPERATOR, "CapabilitiesGained compares two capability-typed arguments")


def _check_values(
    operator: str, arg_type: str, values: list[str], ctx: HookContext, path: str, issues: Issues
) -> None:
    vpath = f"{path}.values"
    if operator in tg.STRING_OPS or operator in tg.SUBSTRING_OPS:
        _check_strings(operator, values, vpath, issues)
    elif operator in ("Equal", "NotEqual") and arg_type in tg.STRING_EQUAL_TYPES:
        for i, value in enumerate(values):
            if "*" in value:
                issues.warn(
                    f"{vpath}[{i}]", C.STRING_MATCH, f"{value!r}: '*' is matched literally, not as a glob"
                )
    elif arg_type in tg.CAP_TYPES:
        _check_count(values, vpath, issues)
        for i, value in enumerate(values):
            names = [n.strip().upper() for n in value.split(",")]
            if parse_go_int(value, base0=True) is None and not all(n in CAPABILITIES for n in names):
                issues.error(f"{vpath}[{i}]", C.VALUE, f"{value!r} is neither a number nor CAP_* names")
    elif operator in tg.INT_OPS:
        _check_count(values, vpath, issues)
        for i, value in enumerate(values):
            _check_int(value, arg_type, f"{vpath}[{i}]", issues, base0=True)
    elif operator in tg.MAP_OPS:
        for i, value in enumerate(values):
            _check_map_value(value, arg_type, ctx, f"{vpath}[{i}]", issues)
    elif operator in tg.RANGE_OPS:
        _check_count(values, vpath, issues)
        for i, value in enumerate(values):
            bounds = value.split(":")
            if len(bounds) != 2:
                issues.error(f"{vpath}[{i}]", C.VALUE, f"{value!r}: a range must be 'min:max'")
                continue
            for bound in bounds:
                _check_int(bound, arg_type, f"{vpath}[{i}]", issues, base0=True)
    elif operator in tg.ADDR_OPS:
        for i, value in enumerate(values):
            _check_address(value, f"{vpath}[{i}]", issues)
    elif operator in tg.PORT_OPS:
        for i, value in enumerate(values):
            _check_port(value, f"{vpath}[{i}]", issues)
    elif operator in tg.SOCK_ENUM_OPS:
        known = {"Protocol": PROTOCOLS, "Family": FAMILIES, "State": TCP_STATES}[operator]
        for i, value in enumerate(values):
            if value not in known and parse_go_int(value, base0=False) is None:
                issues.error(
                    f"{vpath}[{i}]",
                    C.VALUE,
                    f"{value!r} is not a {operator} number or a known name ({sorted(known)[:4]}...)",
                )
    elif operator in tg.FILETYPE_OPS:
        for i, value in enumerate(values):
            if value not in FILE_TYPES:
                issues.error(f"{vpath}[{i}]", C.VALUE, f"{value!r} is not a file type ({sorted(FILE_TYPES)})")


def _check_count(values: list[str], path: str, issues: Issues) -> None:
    if len(values) > MAX_INT_VALUES:
        issues.error(
            path,
            C.LIMIT,
            f"{len(values)} values, but integer Equal/NotEqual/GT/LT/Mask/InRange take at most "
            f"{MAX_INT_VALUES}: use InMap/NotInMap for more",
        )


def _check_int(value: str, arg_type: str, path: str, issues: Issues, *, base0: bool) -> None:
    number = parse_go_int(value, base0=base0)
    if number is None:
        issues.error(path, C.VALUE, _not_an_int(value))
        return
    low, high = _INT_BOUNDS.get(arg_type, (-(2**63), 2**64 - 1))
    if not low <= number <= high:
        issues.error(path, C.VALUE, f"{value!r} does not fit a {arg_type} ({low}..{high})")


def _check_map_value(value: str, arg_type: str, ctx: HookContext, path: str, issues: Issues) -> None:
    if value.startswith("list:"):
        if value[len("list:") :] not in ctx.list_names:
            issues.error(path, C.VALUE, f"{value!r} names no entry of spec.lists")
        return
    # InMap parses base 10 only (no 0x): a hex value fails to load.
    for part in value.split(":") if ":" in value else [value]:
        _check_int(part, arg_type, path, issues, base0=False)


def _check_strings(operator: str, values: list[str], path: str, issues: Issues) -> None:
    if operator in tg.SUBSTRING_OPS:
        limit, what = MAX_SUBSTRING_LEN, "substrings"
    elif operator in ("Prefix", "NotPrefix"):
        limit, what = MAX_PREFIX_LEN, "prefixes"
    else:
        limit, what = MAX_POSTFIX_LEN, "postfixes"
    for i, value in enumerate(values):
        vpath = f"{path}[{i}]"
        if not value:
            issues.error(vpath, C.STRING_MATCH, f"an empty {operator} value matches every string")
        if len(value.encode()) > limit:
            issues.error(
                vpath, C.STRING_MATCH, f"{len(value.encode())} bytes: Tetragon {what} are limited to {limit}"
            )
        if operator not in tg.SUBSTRING_OPS and "*" in value:
            issues.error(
                vpath,
                C.STRING_MATCH,
                f"{value!r}: {operator} values are literal, '*' is not a wildcard (this never matches "
                "the paths you mean); split it into separate literal values or use SubString",
            )


def _check_address(value: str, path: str, issues: Issues) -> None:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        issues.error(
            path,
            C.VALUE,
            f"{value!r} is not an IP address or CIDR: host names are never resolved by the kernel filter",
        )
        return
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        issues.warn(path, C.VALUE, f"{value!r} has host bits set; it means {network}")


def _check_port(value: str, path: str, issues: Issues) -> None:
    parts = value.split(":")
    # ASCII digits: "²".isdigit() is true too, and int("²") raises
    if len(parts) > 2 or not all(p.isascii() and p.isdigit() and int(p) <= 65535 for p in parts):
        issues.error(path, C.VALUE, f"{value!r} is not a port (0-65535) or a port range 'low:high'")

"""Behaviour-profile anomalies: the exact process, parent/child pair or destination a profile never saw.

The original's ``FromAnomaly`` made one broad policy per anomaly type (execve with no filter, any
connect on a port, any open under ``/``). Here each finding becomes a selector on exactly what it
reported, so a policy can be enforced without touching anything the workload did during learning:

- ``anomaly.unknown_process``: an exec (``sys_execve`` arg 0, ``Equal``) of that exact path;
- ``anomaly.unusual_parent``: an exec of that exact child path *by* that exact parent (for an
  exec hook ``matchBinaries`` is the caller, i.e. the parent);
- ``anomaly.unknown_destination``: a TCP connect to that exact address (``/32`` or ``/128``) and,
  when known, that port (``tcp_connect``; the ``-override`` companion uses the LSM connect hook,
  the one Tetragon can make fail).

Selectors enforce only what the run's action says (``Post`` unless asked) and never for shells,
interpreters, runtimes (the protected names) or never-block addresses: those are observed. The
dispatcher's lint may still demote the whole document to audit.

Deliberately no policy for:

- ``anomaly.rate`` and ``anomaly.trend``: a workload doing *more* of what it always does (or
  slowly drifting) has no single process, file or address to match in the kernel; any hook would
  either match the workload's normal traffic or nothing. Those findings go to outputs and actions.
- ``anomaly.unknown_file``: the path is in the finding's attributes, which the event the families
  read (``finding_to_event``) does not carry, so there is nothing exact to match.
- ``anomaly.sensitive_file``: the credential-files family covers it (routed there by keyword).

These categories stay unmapped; :data:`NO_POLICY_REASONS` says why for each, for the lifecycle's
"no policy" link.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, normalize_category, register

UNKNOWN_PROCESS = "anomaly.unknown_process"
UNUSUAL_PARENT = "anomaly.unusual_parent"
UNKNOWN_DESTINATION = "anomaly.unknown_destination"

NO_POLICY_REASONS: dict[str, str] = {
    "anomaly.rate": (
        "no policy: a rate anomaly is more of the workload's usual behaviour, with no single process, "
        "file or address a kernel selector could match"
    ),
    "anomaly.trend": (
        "no policy: a slow trend is a gradual shift of the workload's usual behaviour, with no single "
        "process, file or address a kernel selector could match"
    ),
    "dns.malicious_domain": (
        "no policy from this finding: Cilium cannot deny by name; blocking a listed domain is "
        "resolve-and-deny (qcdr_response.dns, docs/DNS.md), not a kernel selector on one lookup"
    ),
    "dns.dga": (
        "no policy from this finding: generated names change daily; the pod's lookups are the "
        "evidence to act on (isolate, investigate), not a name list to block"
    ),
    "anomaly.unknown_file": (
        "no policy: the file path is not carried into the event policy generators read, so no exact "
        "selector can be made"
    ),
}

# Equal string values go through one hash map per selector; two selectors of 32 cover a burst of
# new binaries, and more than that in one namespace is a redeploy rather than something to kill.
PATHS_PER_SELECTOR = 32
MAX_PATHS = 64
# Hooks per document for each kind: every selector group beyond is merged into the last one.
MAX_HOOKS = 2
MAX_PATH_LEN = 255


def no_policy_reason(category: str) -> str | None:
    """Why findings of this category never get a policy (None: they may)."""
    return NO_POLICY_REASONS.get(normalize_category(category))


def _exact_path(path: str | None) -> str | None:
    if not path or not path.startswith("/") or len(path.encode()) > MAX_PATH_LEN:
        return None
    if any(c in path for c in "*\x00\n") or "/../" in path or path.endswith("/"):
        return None
    return path


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _protected(path: str, ctx: FamilyContext) -> bool:
    return _basename(path) in ctx.config.protected_names or path in ctx.config.runtime_binaries


def _pack(
    selectors: list[dict[str, Any]], merge: Callable[[list[dict[str, Any]]], dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """Selectors into hooks of at most ``tg.MAX_SELECTORS``; overflow is merged into one selector."""
    limit = tg.MAX_SELECTORS * MAX_HOOKS
    if len(selectors) > limit:
        selectors = [*selectors[: limit - 1], merge(selectors[limit - 1 :])]
    return [list(part) for part in tg.chunked(selectors, tg.MAX_SELECTORS)]


# --- exec: unknown processes and unusual parents ---------------------------------------------


def _path_selectors(paths: Iterable[str], action: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values = sorted(set(paths))[:MAX_PATHS]
    return [
        tg.selector(match_args=[tg.match_arg(0, "Equal", part)], action=action)
        for part in tg.chunked(values, PATHS_PER_SELECTOR)
    ]


def _parent_selectors(pairs: Iterable[tuple[str, str]], action: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One selector per set of parents sharing the same children: exact (parent, child) pairs."""
    children: dict[str, set[str]] = defaultdict(set)
    for parent, child in pairs:
        children[parent].add(child)
    parents: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for parent, kids in children.items():
        parents[tuple(sorted(kids)[:PATHS_PER_SELECTOR])].add(parent)
    return [
        tg.selector(match_args=[tg.match_arg(0, "Equal", kids)], binaries=("In", sorted(ps)), action=action)
        for kids, ps in sorted(parents.items(), key=lambda item: (sorted(item[1]), item[0]))
    ]


def _merge_exec(selectors: list[dict[str, Any]]) -> dict[str, Any]:
    # Merged parents x children is wider than the pairs seen, but still only these exact paths.
    kids = sorted({v for s in selectors for a in s["matchArgs"] for v in a["values"]})[:PATHS_PER_SELECTOR]
    bins = sorted({v for s in selectors for b in s.get("matchBinaries", []) for v in b["values"]})
    return tg.selector(
        match_args=[tg.match_arg(0, "Equal", kids)],
        binaries=("In", bins) if bins else None,
        action=selectors[0]["matchActions"],
    )


def _exec_hooks(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    kill: set[str] = set()
    watch: set[str] = set()
    kill_pairs: set[tuple[str, str]] = set()
    watch_pairs: set[tuple[str, str]] = set()
    for event in events:
        category = normalize_category(event.category)
        path = _exact_path(event.process.path) if event.process else None
        if path is None:
            continue
        if category == UNKNOWN_PROCESS:
            (watch if _protected(path, ctx) else kill).add(path)
        elif category == UNUSUAL_PARENT:
            parent = _exact_path(event.process.parent_path) if event.process else None
            if parent is None:
                continue
            # The parent scopes the selector, so even a shell child may be refused to that parent;
            # a parent that is itself a shell or runtime would make it every shell's children.
            (watch_pairs if _protected(parent, ctx) else kill_pairs).add((parent, path))
    selectors = [*_path_selectors(kill, ctx.enforce), *_parent_selectors(kill_pairs, ctx.enforce)]
    if not ctx.override_only:
        selectors += [*_path_selectors(watch, ctx.audit), *_parent_selectors(watch_pairs, ctx.audit)]
    return [tg.exec_hook(part) for part in _pack(selectors, _merge_exec)] if selectors else []


# --- connects: unknown destinations ----------------------------------------------------------


def _cidr(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"{ip}/{ip.max_prefixlen}"


def _never_blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, ctx: FamilyContext) -> bool:
    return any(ip in ipaddress.ip_network(c) for c in ctx.config.never_block)


def _connect_selectors(
    pairs: Iterable[tuple[str, int | None]], action: list[dict[str, Any]], *, lsm: bool
) -> list[dict[str, Any]]:
    """Addresses grouped by the ports they were seen on (ports 4 to a selector, the kernel's limit)."""
    ports: dict[str, set[int | None]] = defaultdict(set)
    for cidr, port in pairs:
        ports[cidr].add(port)
    by_ports: dict[tuple[int, ...], set[str]] = defaultdict(set)
    for cidr, seen in ports.items():
        # An address also seen without a port is matched on any port.
        by_ports[() if None in seen else tuple(sorted(p for p in seen if p is not None))].add(cidr)
    addr, port_op, index = ("SAddr", "SPort", 1) if lsm else ("DAddr", "DPort", 0)
    out = []
    for port_set, cidrs in sorted(by_ports.items()):
        chunks: list[list[int]] = list(tg.chunked(port_set, tg.MAX_INT_VALUES)) or [[]]
        for chunk in chunks:
            args = [tg.match_arg(index, addr, sorted(cidrs))]
            if chunk:
                args.append(tg.match_arg(index, port_op, chunk))
            out.append(tg.selector(match_args=args, action=action))
    return out


def _merge_connect(selectors: list[dict[str, Any]]) -> dict[str, Any]:
    # Overflow keeps the exact addresses and forgets their ports.
    first = selectors[0]["matchArgs"][0]
    cidrs = sorted({v for s in selectors for v in s["matchArgs"][0]["values"]})
    return tg.selector(
        match_args=[tg.match_arg(first["index"], first["operator"], cidrs)],
        action=selectors[0]["matchActions"],
    )


def _connect_hooks(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    block: set[tuple[str, int | None]] = set()
    watch: set[tuple[str, int | None]] = set()
    for event in events:
        net = event.network
        if normalize_category(event.category) != UNKNOWN_DESTINATION or net is None or net.ip is None:
            continue  # a domain alone cannot be matched in the kernel
        port = net.port or None  # port 0 means "not known"
        (watch if _never_blocked(net.ip, ctx) else block).add((_cidr(net.ip), port))
    hooks = []
    if ctx.override_only:
        # Only the LSM hook can make a connect fail; its sockaddr target is named SAddr/SPort.
        selectors = _connect_selectors(block, ctx.enforce, lsm=True)
        return [tg.socket_connect_hook(p) for p in _pack(selectors, _merge_connect)] if selectors else []
    for selectors in (
        _connect_selectors(block, ctx.enforce, lsm=False),
        _connect_selectors(watch, ctx.audit, lsm=False),
    ):
        if selectors:
            hooks += [tg.tcp_connect_hook(p) for p in _pack(selectors, _merge_connect)]
    return hooks


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    return [*_exec_hooks(events, ctx), *_connect_hooks(events, ctx)]


register(
    FamilyGenerator(
        name="behaviour-anomaly",
        title="Behaviour never seen in the workload's learned profile",
        techniques=("T1059", "T1071"),
        tactic="execution",
        routes=(Route(categories=frozenset({UNKNOWN_PROCESS, UNUSUAL_PARENT, UNKNOWN_DESTINATION})),),
        build=build,
    )
)

"""Drift: executables that were not in the image — run from writable paths, memory, or just compiled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

# Paths matched inside policies, not files this process opens.
WRITABLE_PREFIXES = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/")  # noqa: S108
MEMORY_EXEC_PREFIXES = ("/proc/self/fd/", "/dev/fd/", "/memfd:")
COMPILERS = ("gcc", "g++", "cc", "clang", "tcc", "rustc", "as", "ld")
MAX_OBSERVED_PATHS = 64
# binaries and library directories a running container should never write to (image content)
BINARY_DIRS = (
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
    "/lib/",
    "/usr/lib/",
)
PACKAGE_MANAGER = "drift.package_manager"
BINARY_DIR_WRITE = "drift.binary_dir_write"


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    # The exact paths findings saw executed from writable places are enforced; the whole of
    # /tmp is only observed, since build steps and init scripts run from there too.
    observed = sorted(
        {
            e.process.path
            for e in events
            if e.process
            and e.process.path
            and e.process.path.startswith(WRITABLE_PREFIXES)
            and len(e.process.path) < 256
            and "*" not in e.process.path
        }
    )[:MAX_OBSERVED_PATHS]
    enforce = [
        tg.selector(match_args=[tg.match_arg(0, "Equal", part)], action=ctx.enforce)
        for part in tg.chunked(observed, 32)
    ][:2]
    enforce += tg.exec_selectors(COMPILERS, ctx.enforce)
    if not ctx.override_only:
        # runc re-executes itself from a memfd, so executions from memory are observed, never killed.
        enforce.append(
            tg.selector(
                match_args=[tg.match_arg(0, "Prefix", WRITABLE_PREFIXES + MEMORY_EXEC_PREFIXES)],
                action=ctx.audit,
            )
        )
    # package managers seen installing in a running container: exactly those binaries
    managers = sorted(
        {
            e.process.path or e.process.name or ""
            for e in events
            if e.category == PACKAGE_MANAGER and e.process and (e.process.path or e.process.name)
        }
    )
    if managers:
        enforce += tg.exec_selectors(managers, ctx.enforce)[:1]
    hooks = [tg.exec_hook(enforce)]
    if any(e.category == BINARY_DIR_WRITE for e in events):
        # observed only: package upgrades and some entrypoints legitimately write there, and the
        # lint refuses to enforce on system directories anyway
        hooks.append(
            tg.file_permission_hook(tg.file_selectors("Prefix", BINARY_DIRS, ctx.audit, access=tg.MAY_WRITE))
        )
    return hooks


register(
    FamilyGenerator(
        name="drift",
        title="Executables that were not part of the image",
        techniques=("T1059", "T1027.004", "T1620"),
        tactic="execution",
        routes=(
            Route(categories=frozenset({"execution", "drift", "container_drift"})),
            Route(keywords=("drift", "new_executable", "malware", "trojan", "backdoor")),
            Route(techniques=("T1027.004", "T1620", "T1204")),
        ),
        build=build,
    )
)

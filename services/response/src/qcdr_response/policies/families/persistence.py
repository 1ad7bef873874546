"""Persistence: cron, systemd units, authorized_keys, preload libraries, kernel modules, web shells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

WRITE_PREFIXES = (
    "/etc/cron.d/",
    "/etc/cron.daily/",
    "/etc/cron.hourly/",
    "/etc/cron.weekly/",
    "/etc/cron.monthly/",
    "/var/spool/cron/",
    "/etc/systemd/system/",
    "/usr/lib/systemd/system/",
    "/lib/systemd/system/",
    "/etc/init.d/",
    "/etc/profile.d/",
)
WRITE_FILES = ("/etc/crontab", "/etc/ld.so.preload", "/etc/ld.so.conf", "/etc/rc.local")
WRITE_SUFFIXES = ("/.ssh/authorized_keys", "/.ssh/authorized_keys2", "/.bashrc", "/.profile")
MODULE_TOOLS = ("insmod", "modprobe", "crontab", "at", "useradd", "adduser", "usermod")


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    return [
        tg.file_permission_hook(
            [
                *tg.file_selectors("Prefix", WRITE_PREFIXES, ctx.enforce, access=tg.MAY_WRITE),
                *tg.file_selectors("Equal", WRITE_FILES, ctx.enforce, access=tg.MAY_WRITE),
                *tg.file_selectors("Postfix", WRITE_SUFFIXES, ctx.enforce, access=tg.MAY_WRITE),
            ]
        ),
        tg.exec_hook(tg.exec_selectors(MODULE_TOOLS, ctx.enforce)),
        # Loading a kernel module from a workload is never legitimate; the runtime does not do it.
        tg.int_syscall_hook(
            "sys_finit_module",
            ("int",),
            [tg.selector(binaries=("NotIn", ctx.config.runtime_binaries), action=ctx.enforce)],
        ),
    ]


register(
    FamilyGenerator(
        name="persistence",
        title="Writes to persistence locations and kernel module loads",
        techniques=("T1053.003", "T1543.002", "T1098.004", "T1574.006", "T1547.006", "T1505.003"),
        tactic="persistence",
        routes=(
            Route(categories=frozenset({"persistence"})),
            Route(categories=frozenset({"execution"}), techniques=("T1505.003",)),
            Route(keywords=("persist", "cron", "webshell", "kernel_module", "account_creation")),
            Route(techniques=("T1053", "T1543", "T1098", "T1574", "T1547", "T1505", "T1136")),
        ),
        build=build,
    )
)

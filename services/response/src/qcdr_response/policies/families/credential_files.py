"""Credential files and memory: shadow files, SSH and cloud keys, process memory (T1552.001, T1003)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

SECRET_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/security/opasswd")
SECRET_SUFFIXES = (
    "/.ssh/id_rsa",
    "/.ssh/id_dsa",
    "/.ssh/id_ecdsa",
    "/.ssh/id_ed25519",
    "/.aws/credentials",
    "/.azure/accessTokens.json",
    "/.config/gcloud/credentials.db",
    "/.kube/config",
    "/.docker/config.json",
)
# Every client library reads its own service-account token: that read is only ever observed.
OBSERVED_ONLY_PREFIXES = (
    "/var/run/secrets/kubernetes.io/serviceaccount/",
    "/run/secrets/kubernetes.io/serviceaccount/",
)
# Reading another process's environment or memory: credential dumping.
MEMORY_SUFFIXES = ("/environ", "/mem")
DUMP_TOOLS = ("gcore", "gdb", "mimipenguin", "lazagne", "truffleHog", "gitleaks")
PTRACE_ATTACH = 16
PTRACE_SEIZE = 0x4206


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    enforce_files = [
        *tg.file_selectors("Equal", SECRET_FILES, ctx.enforce, access=tg.MAY_READ),
        *tg.file_selectors("Postfix", SECRET_SUFFIXES, ctx.enforce, access=tg.MAY_READ),
    ]
    hooks = [
        tg.file_permission_hook(enforce_files),
        tg.exec_hook(tg.exec_selectors(DUMP_TOOLS, ctx.enforce)),
        tg.int_syscall_hook(
            "sys_ptrace",
            ("int", "int"),
            [
                tg.selector(
                    match_args=[tg.match_arg(0, "Equal", [PTRACE_ATTACH, PTRACE_SEIZE])], action=ctx.enforce
                )
            ],
        ),
    ]
    if not ctx.override_only:
        hooks.append(
            tg.file_permission_hook(
                [
                    *tg.file_selectors("Prefix", OBSERVED_ONLY_PREFIXES, ctx.audit, access=tg.MAY_READ),
                    *tg.file_selectors("Postfix", MEMORY_SUFFIXES, ctx.audit, access=tg.MAY_READ),
                ]
            )
        )
    return hooks


register(
    FamilyGenerator(
        name="credential-files",
        title="Reads of credential files, keys and other processes' memory",
        techniques=("T1552.001", "T1003"),
        tactic="credential-access",
        routes=(
            Route(categories=frozenset({"credential_access", "collection"})),
            Route(keywords=("credential", "sensitive_file", "secret", "password")),
            Route(techniques=("T1552", "T1003", "T1555")),
        ),
        build=build,
    )
)

"""Baseline: SELinux ``type`` only from the container types, and no custom ``user`` or ``role``
(``level`` is free). v1.31 allows ``container_engine_t`` too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcdr_admission.pss.describe import plural, quoted, setters, sorted_unique
from qcdr_admission.pss.pod import Pod, present, string
from qcdr_admission.pss.registry import Check, CheckFn, Revision, register

TYPES_V1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
TYPES_V1_31 = TYPES_V1_0 | {"container_engine_t"}


def _make(allowed: frozenset[str]) -> CheckFn:
    def se_linux_options(pod: Pod) -> str | None:
        bad_types: list[str] = []
        user = role = False

        def bad(sc: Mapping[str, Any], where: str) -> bool:
            nonlocal user, role
            options = present(sc, "seLinuxOptions", where)
            if options is None:
                return False
            where = f"{where}.seLinuxOptions"
            kind = string(options, "type", where) or ""
            is_bad = False
            if kind not in allowed:
                bad_types.append(kind)
                is_bad = True
            if string(options, "user", where):
                user = is_bad = True
            if string(options, "role", where):
                role = is_bad = True
            return is_bad

        pod_bad = bad(pod.sc, "spec.securityContext")
        names = [c.name for c in pod.containers if bad(c.sc, c.sc_path)]
        if not pod_bad and not names:
            return None
        what = []
        if bad_types:
            types = sorted_unique(bad_types)
            what.append(f"{plural(len(types), 'type', 'types')} {quoted(types)}")
        if user:
            what.append("a user")
        if role:
            what.append("a role")
        return (
            f"{setters(pod_bad, names)} must not set securityContext.seLinuxOptions with {' and '.join(what)}"
        )

    return se_linux_options


register(
    Check(
        "seLinuxOptions",
        "baseline",
        (Revision(0, _make(TYPES_V1_0)), Revision(31, _make(TYPES_V1_31))),
    )
)

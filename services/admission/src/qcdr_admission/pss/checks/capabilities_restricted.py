"""Restricted from v1.22: every container drops ``ALL`` and adds at most ``NET_BIND_SERVICE``.
Replaces ``capabilities_baseline`` at the restricted level. From v1.25 Windows pods are exempt."""

from __future__ import annotations

from qcdr_admission.pss.describe import containers, quoted, sorted_unique
from qcdr_admission.pss.pod import Pod, present, strings
from qcdr_admission.pss.registry import Check, Revision, register


def capabilities_restricted_v1_22(pod: Pod) -> str | None:
    no_drop_all: list[str] = []
    adding: list[str] = []
    added: list[str] = []
    for c in pod.containers:
        caps = present(c.sc, "capabilities", c.sc_path)
        if caps is None:
            no_drop_all.append(c.name)
            continue
        where = f"{c.sc_path}.capabilities"
        if "ALL" not in strings(caps, "drop", where):
            no_drop_all.append(c.name)
        extra = [cap for cap in strings(caps, "add", where) if cap != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c.name)
            added.extend(extra)
    parts = []
    if no_drop_all:
        parts.append(f'{containers(no_drop_all)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        parts.append(
            f"{containers(adding)} must not add {quoted(sorted_unique(added))} "
            '(securityContext.capabilities.add may only hold "NET_BIND_SERVICE")'
        )
    return "; ".join(parts) or None


def capabilities_restricted_v1_25(pod: Pod) -> str | None:
    return None if pod.is_windows else capabilities_restricted_v1_22(pod)


OVERRIDES = ("capabilities_baseline",)
register(
    Check(
        "capabilities_restricted",
        "restricted",
        (
            Revision(22, capabilities_restricted_v1_22, OVERRIDES),
            Revision(25, capabilities_restricted_v1_25, OVERRIDES),
        ),
    )
)

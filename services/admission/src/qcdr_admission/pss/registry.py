"""The checks: each module of :mod:`qcdr_admission.pss.checks` registers one :class:`Check`.

A check has an upstream id, a level and one or more revisions, each valid from a minimum policy
version (``v1.<minimum>``) until the next revision. A restricted revision may *override* baseline
checks: at the restricted level, from that revision's version on, the baseline checks it names are
not run (the restricted check is their stricter replacement).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from qcdr_common.registry import Registry

from qcdr_admission.pss.pod import Pod

CheckLevel = Literal["baseline", "restricted"]
# pod -> None when allowed, else what is forbidden and where
CheckFn = Callable[[Pod], str | None]


@dataclass(frozen=True, slots=True)
class Revision:
    minimum: int  # the minor version this revision applies from
    check: CheckFn
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    level: CheckLevel
    revisions: tuple[Revision, ...]  # by ascending ``minimum``

    def __post_init__(self) -> None:
        minimums = [r.minimum for r in self.revisions]
        if not minimums or minimums != sorted(set(minimums)):
            raise ValueError(f"check {self.id}: revisions must ascend by minimum version")
        if self.level == "baseline" and any(r.overrides for r in self.revisions):
            raise ValueError(f"check {self.id}: only restricted checks override others")

    def at(self, minor: int) -> Revision | None:
        """The revision in force at ``v1.<minor>``, or ``None`` before the check existed."""
        found = None
        for revision in self.revisions:
            if revision.minimum > minor:
                break
            found = revision
        return found


CHECKS: Registry[Check] = Registry("Pod Security Standards check")


def register(check: Check) -> Check:
    """Register ``check`` under its id (a duplicate id fails at import)."""
    CHECKS.add(check.id, check, check.revisions[0].check.__module__)
    return check

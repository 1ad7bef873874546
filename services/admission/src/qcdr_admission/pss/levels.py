"""The level logic: which check revisions run for a (level, version), and the evaluation itself.

Baseline runs every baseline check that exists at the version, each in the revision in force
there. Restricted runs the same plus the restricted checks, minus the baseline checks that a
restricted revision in force overrides. Plans are computed once per (level, version) and cached,
so a request only pays for the checks themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from qcdr_admission.pss.checks import load_checks
from qcdr_admission.pss.pod import Pod
from qcdr_admission.pss.registry import CheckFn
from qcdr_admission.pss.versions import parse_version

Level = Literal["privileged", "baseline", "restricted"]
LEVELS: tuple[Level, ...] = ("privileged", "baseline", "restricted")


@dataclass(frozen=True, slots=True)
class Violation:
    check: str  # the upstream check id, e.g. "capabilities_restricted"
    message: str  # what is forbidden and where


@functools.cache
def plan(level: str, version: str) -> tuple[tuple[str, CheckFn], ...]:
    """The (check id, revision) pairs that run at ``level`` and ``version``, by check id.

    Raises ``ValueError`` for an unknown level or version.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security Standards level {level!r}: known are {', '.join(LEVELS)}")
    minor = parse_version(version)
    if level == "privileged":
        return ()
    active: dict[str, CheckFn] = {}
    overridden: set[str] = set()
    for check in load_checks():
        if check.level == "restricted" and level != "restricted":
            continue
        revision = check.at(minor)
        if revision is None:
            continue
        active[check.id] = revision.check
        overridden.update(revision.overrides)
    return tuple(
        sorted(((i, fn) for i, fn in active.items() if i not in overridden), key=lambda p: p[0].lower())
    )


def check_ids(level: str, version: str) -> tuple[str, ...]:
    """The ids of the checks that run at ``level`` and ``version``."""
    return tuple(check_id for check_id, _ in plan(level, version))


def evaluate(
    pod_metadata: Mapping[str, Any], pod_spec: Mapping[str, Any], level: str, version: str = "latest"
) -> list[Violation]:
    """Every violation of the Pod Security Standard ``level`` at ``version`` (``latest`` or
    ``v1.N``); an empty list means allowed.

    Pure and copy-free. Raises :class:`~qcdr_admission.pss.errors.MalformedObjectError` when a
    field it reads has the wrong shape, ``ValueError`` for an unknown level or version.
    """
    checks = plan(level, version)
    if not checks:
        return []
    pod = Pod(pod_metadata, pod_spec)
    violations = []
    for check_id, check in checks:
        message = check(pod)
        if message is not None:
            violations.append(Violation(check_id, message))
    return violations


@functools.cache
def _joint_plan(
    runs: tuple[tuple[str, str], ...],
) -> tuple[tuple[CheckFn, ...], tuple[tuple[tuple[str, int], ...], ...]]:
    """The distinct check revisions of several plans, and per plan its (check id, index) pairs."""
    unique: dict[CheckFn, int] = {}
    per_run = []
    for level, version in runs:
        per_run.append(
            tuple(
                (check_id, unique.setdefault(check, len(unique))) for check_id, check in plan(level, version)
            )
        )
    return tuple(unique), tuple(per_run)


def evaluate_many(
    pod_metadata: Mapping[str, Any],
    pod_spec: Mapping[str, Any],
    runs: Sequence[tuple[str, str]],
    *,
    pod: Pod | None = None,
) -> list[list[Violation]]:
    """``evaluate`` for several (level, version) pairs at once, each check revision run once: the
    webhook enforces one level and warns on another, and most checks are shared between them.
    ``pod``: the view of these two, when the caller has built it already."""
    if pod is None:
        pod = Pod(pod_metadata, pod_spec)
    checks, per_run = _joint_plan(tuple(runs))
    messages = [check(pod) for check in checks]
    return [
        [Violation(check_id, message) for check_id, i in pairs if (message := messages[i]) is not None]
        for pairs in per_run
    ]

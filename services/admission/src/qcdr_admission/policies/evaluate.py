"""The policy engine: a compiled, immutable set of policies evaluated from memory.

:class:`PolicyEngine` implements :class:`qcdr_admission.engine.Engine`. It is built once per policy
set (scopes compiled, check functions looked up) and replaced as a whole when the set changes, so
the webhook always sees one consistent set. The image-status and runtime views are read at
evaluation time (they are refreshed in place by their own background tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qcdr_admission.engine import Mode, Result, Subject
from qcdr_admission.policies.context import (
    NO_IMAGES,
    NO_RUNTIME,
    CheckContext,
    ImageStatusView,
    RuntimeView,
)
from qcdr_admission.policies.model import AdmissionPolicy
from qcdr_admission.policies.registry import CheckConfig, load_checks
from qcdr_admission.policies.scoping import Scope


@dataclass(frozen=True, slots=True)
class _Compiled:
    source: str
    mode: Mode
    scope: Scope
    checks: tuple[tuple[str, CheckConfig, Callable[[Any, CheckContext], Sequence[str]]], ...]


class PolicyEngine:
    """The enabled policies of one set, in name order."""

    def __init__(
        self,
        policies: Iterable[AdmissionPolicy],
        *,
        images: ImageStatusView = NO_IMAGES,
        runtime: RuntimeView = NO_RUNTIME,
        generation: int = 0,
    ) -> None:
        registry = load_checks()
        self.policies = tuple(sorted(policies, key=lambda p: p.name))
        self.generation = generation
        self.images = images
        self.runtime = runtime
        compiled = []
        for policy in self.policies:
            if not policy.enabled or not policy.checks:
                continue
            checks = tuple(
                (registry.get(key).id, config, registry.get(key).run) for key, config in policy.checks.items()
            )
            compiled.append(_Compiled(f"policy:{policy.name}", policy.mode, Scope.of(policy.match), checks))
        self._compiled = tuple(compiled)

    def evaluate(self, subject: Subject) -> list[Result]:
        applicable = [p for p in self._compiled if p.scope.applies(subject)]
        if not applicable:
            return []
        ctx = CheckContext(subject, subject.pod(), images=self.images, runtime=self.runtime)
        results: list[Result] = []
        for policy in applicable:
            for check_id, config, run in policy.checks:
                for message in run(config, ctx):
                    results.append(Result(policy.source, check_id, message, policy.mode))
        return results

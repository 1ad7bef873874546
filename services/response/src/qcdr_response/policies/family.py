"""The policy-generator extension point: one family per module in ``families/``.

A family declares which findings it answers (routes over category and ATT&CK technique) and a pure
function from those findings to Tetragon hooks. Everything around it (scoping per namespace,
names, labels, the action, the Override split, validation and lint) belongs to the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.registry import Registry

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.config import EnforcementAction, GenerationConfig


def normalize_category(category: str) -> str:
    return category.strip().lower().replace(" ", "_").replace("-", "_")


@dataclass(frozen=True)
class Route:
    """Findings a family answers: exact categories, keywords in the category, technique prefixes.

    Techniques are matched as ATT&CK prefixes on sub-technique boundaries (``T1059`` covers
    ``T1059.004``) and the longest match wins, so a specific route beats a generic one.
    """

    categories: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()

    def score(self, category: str, techniques: Sequence[str]) -> float:
        exact = category in self.categories
        keyword = any(k in category for k in self.keywords)
        tech = max(
            (len(t) for t in self.techniques for et in techniques if _technique_covers(t, et)), default=0
        )
        if self.techniques and tech == 0 and (exact or keyword):
            # A route that names techniques only applies when one of them is present.
            return 0.0
        if exact:
            base = 4.0 if tech else 3.0
        elif keyword:
            base = 2.5 if tech else 2.0
        elif tech:
            base = 1.0
        else:
            return 0.0
        return base + tech / 100.0


def _technique_covers(prefix: str, technique: str) -> bool:
    return technique == prefix or technique.startswith(prefix + ".")


@dataclass(frozen=True)
class FamilyContext:
    """What a family's build function may use: the actions to attach and the run's settings."""

    config: GenerationConfig
    action: EnforcementAction

    @property
    def enforce(self) -> list[dict[str, Any]]:
        """Actions of selectors that block when the run enforces."""
        return tg.actions(self.action.value)

    @property
    def audit(self) -> list[dict[str, Any]]:
        """Actions of selectors that only ever observe (too broad to enforce safely)."""
        return tg.actions("Post")

    @property
    def override_only(self) -> bool:
        return self.action is EnforcementAction.OVERRIDE

    def killable_names(self, events: Sequence[SecurityEvent]) -> list[str]:
        """Process names seen in findings that may join an exec kill-list (never shells, runtimes...)."""
        names = set()
        for event in events:
            proc = event.process
            name = (proc.name or (proc.path or "").rsplit("/", 1)[-1]) if proc else ""
            name = name.strip()
            if _is_plain_binary_name(name) and name not in self.config.protected_names:
                names.add(name)
        return sorted(names)


def _is_plain_binary_name(name: str) -> bool:
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._+-" for c in name) and not name.startswith(".")


BuildFn = Callable[[Sequence[SecurityEvent], FamilyContext], list[dict[str, Any]]]


@dataclass(frozen=True)
class FamilyGenerator:
    name: str
    title: str
    techniques: tuple[str, ...]
    routes: tuple[Route, ...]
    build: BuildFn
    tactic: str = ""
    notes: tuple[str, ...] = field(default=())

    def score(self, category: str, techniques: Sequence[str]) -> float:
        return max((r.score(category, techniques) for r in self.routes), default=0.0)


GENERATORS: Registry[FamilyGenerator] = Registry("policy generator")


def register(generator: FamilyGenerator) -> FamilyGenerator:
    return GENERATORS.add(generator.name, generator, generator.build.__module__)

"""Whether a policy applies to a subject: namespace names and globs, exclusions, kinds and a label
selector on the admitted object's labels. Compiled once per policy set."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qcdr_admission.engine import Subject
from qcdr_admission.policies.model import LabelSelector, Match


def _pattern(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


def selector_matches(selector: LabelSelector, labels: Mapping[str, Any]) -> bool:
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
        if req.operator == "In" and (not present or labels[req.key] not in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Scope:
    include: re.Pattern[str] | None
    exclude: re.Pattern[str] | None
    kinds: frozenset[str]
    selector: LabelSelector | None

    @classmethod
    def of(cls, match: Match) -> Scope:
        return cls(
            _pattern(match.namespaces),
            _pattern(match.exclude_namespaces),
            frozenset(k.lower() for k in match.kinds),
            match.selector,
        )

    def applies(self, subject: Subject) -> bool:
        if self.kinds and subject.kind.lower() not in self.kinds:
            return False
        namespace = subject.namespace or ""
        if self.include is not None and not self.include.fullmatch(namespace):
            return False
        if self.exclude is not None and self.exclude.fullmatch(namespace):
            return False
        if self.selector is not None:
            metadata = subject.object.get("metadata")
            labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
            if not selector_matches(self.selector, labels if isinstance(labels, Mapping) else {}):
                return False
        return True

"""Label and field selectors as the API server parses them (``labelSelector=``, ``fieldSelector=``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]

_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")

# The fields every kind can be selected by (a real server adds a few per kind, e.g. status.phase).
SELECTABLE_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        return not present or value not in self.values  # notin


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _key(key: str, term: str) -> str:
    key = key.strip()
    if not _KEY.match(key):
        raise ValueError(f"invalid label key {key!r} in selector term {term!r}")
    return key


def parse_label_selector(text: str) -> list[Requirement]:
    """``a=b,c!=d,e,!f,g in (h,i),j notin (k)``; raises ValueError on a malformed selector."""
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        if m := _SET_TERM.match(term):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            op: Operator = "in" if m.group(2) == "in" else "notin"
            requirements.append(Requirement(_key(m.group(1), term), op, values))
        elif "!=" in term:
            key, _, value = term.partition("!=")
            requirements.append(Requirement(_key(key, term), "!=", (value.strip(),)))
        elif "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            requirements.append(Requirement(_key(key, term), "=", (value.strip(),)))
        elif term.startswith("!"):
            requirements.append(Requirement(_key(term[1:], term), "!"))
        else:
            requirements.append(Requirement(_key(term, term), "exists"))
    return requirements


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    equal: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for part in self.field.split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        actual = "" if current is None else str(current)
        return (actual == self.value) is self.equal


def parse_field_selector(text: str) -> list[FieldRequirement]:
    """``metadata.name=x,metadata.namespace!=y``; only ``SELECTABLE_FIELDS``, else ValueError."""
    requirements: list[FieldRequirement] = []
    for term in _split_terms(text):
        if "!=" in term:
            field, _, value = term.partition("!=")
            equal = False
        elif "=" in term:
            field, _, value = term.partition("==") if "==" in term else term.partition("=")
            equal = True
        else:
            raise ValueError(f"invalid field selector term {term!r}")
        field = field.strip()
        if field not in SELECTABLE_FIELDS:
            raise ValueError(f'field label not supported: "{field}"')
        requirements.append(FieldRequirement(field, value.strip(), equal))
    return requirements


_EXPRESSION_OPS: dict[str, Operator] = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def from_label_selector(selector: Mapping[str, Any]) -> list[Requirement]:
    """A ``LabelSelector`` object (``matchLabels`` and ``matchExpressions``) as requirements, sorted
    by key like the API server's ``LabelSelectorAsSelector``; raises ValueError when malformed."""
    requirements = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        op = _EXPRESSION_OPS.get(str(expression.get("operator")))
        if op is None:
            raise ValueError(f"{expression.get('operator')!r} is not a valid label selector operator")
        values = tuple(str(v) for v in expression.get("values") or [])
        if (op in ("in", "notin")) != bool(values):
            raise ValueError(f"values must be {'non-' if op in ('in', 'notin') else ''}empty for {op}")
        requirements.append(Requirement(str(expression.get("key")), op, values))
    return sorted(requirements, key=lambda r: r.key)


def selector_string(requirements: list[Requirement]) -> str:
    """The ``labelSelector=`` text of requirements (``app=web,tier in (a,b)``)."""

    def one(r: Requirement) -> str:
        if r.op == "exists":
            return r.key
        if r.op == "!":
            return f"!{r.key}"
        if r.op in ("=", "!="):
            return f"{r.key}{r.op}{r.values[0]}"
        return f"{r.key} {r.op} ({','.join(sorted(r.values))})"

    return ",".join(one(r) for r in requirements)
